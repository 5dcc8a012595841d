"""A web application for tests: a ``twisted.web`` server on 127.0.0.1 that records what it is sent.

For plugins that hand mail to a web application (SMTP applications,
webhooks): the test starts the server, points the plugin at its ``url`` and
reads back the requests. Nothing leaves the host::

    class GatewayTests(unittest.TestCase):
        async def test_posts(self):
            web = start_web_server(self)
            engine = make_engine([f"web_gateway {web.url} post@example.com"], clock=reactor)
            ...
            [request] = web.requests
            self.assertEqual(request.args["title"], [b"Red chair"])

Every request is answered with ``status`` and ``answer`` (change them on the
server between requests); :func:`start_web_server` stops the server when the
test ends, so trial sees a clean reactor. The plugin under test talks to it
through the real reactor: build its engine with ``clock=reactor`` and await
``run_hook``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet import reactor
from twisted.web import resource, server


@dataclass(frozen=True)
class WebRequest:
    """One request the server received.

    ``args`` are the query and form fields (``application/x-www-form-urlencoded``
    and ``multipart/form-data``, uploaded files included) by name, each a list
    of values; ``body`` is the request body as sent.
    """

    method: str
    path: str
    headers: dict[str, str]
    args: dict[str, list[bytes]]
    body: bytes


@dataclass
class WebServer:
    """The running server: where it listens, what it answers, what it was sent."""

    url: str = ""
    status: int = 200
    answer: bytes = b"ok"
    requests: list[WebRequest] = field(default_factory=list)


class _Recorder(resource.Resource):
    isLeaf = True

    def __init__(self, web: WebServer) -> None:
        super().__init__()
        self.web = web

    def render(self, request: Any) -> bytes:
        request.content.seek(0)
        self.web.requests.append(WebRequest(
            method=request.method.decode(), path=request.uri.decode(),
            headers={name.decode().lower(): values[-1].decode()
                     for name, values in request.requestHeaders.getAllRawHeaders()},
            args={name.decode(): list(values) for name, values in (request.args or {}).items()},
            body=request.content.read()))
        request.setResponseCode(self.web.status)
        return self.web.answer


def start_web_server(test: Any, status: int = 200, answer: bytes = b"ok") -> WebServer:
    """Listen on a free port of 127.0.0.1 until ``test`` ends; every request gets ``status``."""
    web = WebServer(status=status, answer=answer)
    site = server.Site(_Recorder(web))
    site.noisy = False
    listen: Any = reactor.listenTCP  # type: ignore[attr-defined]
    port = listen(0, site, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    web.url = f"http://127.0.0.1:{port.getHost().port}/"
    return web


__all__ = ["WebRequest", "WebServer", "start_web_server"]
