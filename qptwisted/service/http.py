"""The HTTP side: one twisted.web site per endpoint, serving ``/metrics``, the web view, or both.

``--metrics ENDPOINT`` serves ``/metrics``; ``--web ENDPOINT`` serves the web
view at ``/``. Given the same endpoint, one listener serves both. An
endpoint that names no interface (``tcp:9025``, or just ``9025``) listens on
127.0.0.1 only; name one to be reachable from elsewhere
(``tcp:9025:interface=192.0.2.10``).

The web view shows envelopes and client addresses, so it answers only
clients on the loopback network unless ``--web-remote`` is given, and with
``--web-password-file FILE`` (lines of ``user:password``, read at each
login) it asks for HTTP basic authentication. Its pages carry a strict
Content-Security-Policy: every script and style sheet is the project's own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from twisted.application import service, strports
from twisted.cred.checkers import FilePasswordDB
from twisted.cred.portal import IRealm, Portal
from twisted.web import guard, http, pages, resource, server
from twisted.web.server import Request
from zope.interface import implementer

_SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                b"base-uri 'none'; form-action 'none'",
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
}


def local_endpoint(description: str) -> str:
    """``description``, listening on loopback when it is a TCP endpoint that names no interface."""
    if description.isdigit():
        return f"tcp:{description}:interface=127.0.0.1"
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6") and "interface=" not in description:
        return description + (":interface=127.0.0.1" if kind == "tcp" else r":interface=\:\:1")
    return description


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


@implementer(IRealm)
class _Realm:
    """Hands the web view to whoever logged in."""

    def __init__(self, view: resource.Resource) -> None:
        self.view = view

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        """The web view for the IResource interface."""
        if resource.IResource in interfaces:
            return resource.IResource, self.view, lambda: None
        raise NotImplementedError()


class _Root(resource.Resource):
    """``/metrics`` to the metrics page, the rest to the web view (guarded)."""

    def __init__(self, metrics: resource.IResource | None, view: resource.IResource | None,
                 allow_remote: bool) -> None:
        super().__init__()
        self.metrics = metrics
        self.view = view
        self.allow_remote = allow_remote

    def getChildWithDefault(self, name: bytes, request: Request) -> resource.IResource:  # type: ignore[override]
        """Route by the first path segment."""
        if name == b"metrics" and self.metrics is not None:
            return self.metrics
        if self.view is None:
            return pages.notFound()
        for header, value in _SECURITY_HEADERS.items():
            request.setHeader(header, value)
        client = request.getClientAddress()
        host = getattr(client, "host", None)
        if host is not None and not self.allow_remote and not is_loopback(host):
            return pages.forbidden("The web view answers local clients only (see --web-remote).")
        return self.view.getChildWithDefault(name, request)


class QuietSite(server.Site):
    """A site that writes no access log (a scrape every 15 seconds is not news)."""

    noisy = False

    def log(self, request: http.Request) -> None:
        """Nothing."""


def build_view(children: Mapping[bytes, resource.Resource], password_file: str | None = None,
               realm: str = "qpsmtpd") -> resource.IResource:
    """The web view's resource tree, behind basic authentication when ``password_file`` is given."""
    view = resource.Resource()
    for name, child in children.items():
        view.putChild(name, child)
    if password_file is None:
        return view
    portal = Portal(_Realm(view), [FilePasswordDB(password_file, cache=False)])
    return guard.HTTPAuthSessionWrapper(portal, [guard.BasicCredentialFactory(realm.encode())])


def http_services(metrics_endpoint: str | None, metrics: resource.IResource | None,
                  web_endpoint: str | None, view: resource.IResource | None,
                  allow_remote: bool = False) -> list[service.Service]:
    """The listeners: one site per distinct endpoint (after :func:`local_endpoint`)."""
    sites: dict[str, tuple[resource.IResource | None, resource.IResource | None]] = {}
    if metrics_endpoint is not None and metrics is not None:
        sites[local_endpoint(metrics_endpoint)] = (metrics, None)
    if web_endpoint is not None and view is not None:
        endpoint = local_endpoint(web_endpoint)
        sites[endpoint] = (sites.get(endpoint, (None, None))[0], view)
    return [strports.service(endpoint, QuietSite(_Root(served_metrics, served_view, allow_remote)))
            for endpoint, (served_metrics, served_view) in sites.items()]


__all__ = ["QuietSite", "build_view", "http_services", "is_loopback", "local_endpoint"]
