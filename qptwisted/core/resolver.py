"""The resolver facade: every DNS lookup of the engine and its plugins goes through here.

Lookups run inside the reactor with :class:`twisted.names.client.Resolver`
(no threads, any reactor), each bounded by a timeout, and at most
``max_in_flight`` at a time (a :class:`~twisted.internet.defer.DeferredSemaphore`).
Results are plain Python values:

- NXDOMAIN and "no data" are an empty list, never an error;
- a timeout raises :class:`DNSTimeout`, any other failure (SERVFAIL, REFUSED,
  a malformed answer) raises :class:`DNSServerFailure`; both are
  :class:`DNSTempError`, which plugins map to "temporary failure".

Plugins reach it as ``self.engine.resolver``. Configuration (config files):

``resolvers``
    One nameserver per line: ``192.0.2.53``, ``192.0.2.53:5353``, ``::1`` or
    ``[::1]:5353``. Default: the nameservers of the system's ``resolv.conf``.
``dns_timeout``
    Seconds one lookup may take (default 5).
``dns_max_in_flight``
    Lookups in flight at once, per engine (default 100).

Blocking libraries (pyspf, dkimpy) that run on the engine's thread pool use
:meth:`Resolver.dnspython`, a dnspython resolver pointed at the same
nameservers, so configuration and tests cover them too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

import dns.nameserver
import dns.resolver
import dns.reversename
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.names import client
from twisted.names import dns as tdns
from twisted.names import error as terror
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from qptwisted.core.observer import Observer

_T = TypeVar("_T")
Server = tuple[str, int]
_KINDS = {tdns.A: "A", tdns.AAAA: "AAAA", tdns.MX: "MX", tdns.TXT: "TXT", tdns.PTR: "PTR"}


class DNSTempError(Exception):
    """A lookup that could not be answered now; try again later."""


class DNSTimeout(DNSTempError):
    """No answer within the lookup's timeout."""


class DNSServerFailure(DNSTempError):
    """The nameserver answered SERVFAIL, REFUSED or something unusable."""


def parse_server(entry: str) -> Server:
    """``"192.0.2.1"``, ``"192.0.2.1:5353"``, ``"::1"`` or ``"[::1]:5353"`` -> ``(host, port)``."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        port = int(port_text)
    else:
        host, port = entry, 53
    ipaddress.ip_address(host)  # raises ValueError for a name: nameservers are addresses
    return host, port


def system_servers() -> list[Server]:
    """The nameservers of the system's ``resolv.conf`` (loopback if none can be read)."""
    try:
        found = dns.resolver.Resolver(configure=True).nameservers
    except Exception:  # no resolv.conf, no nameservers in it
        found = []
    servers = [(str(ns), 53) for ns in found if isinstance(ns, str)]
    return servers or [("127.0.0.1", 53)]


def reverse_name(ip: str) -> str:
    """The reversed-octet (IPv4) or reversed-nibble (IPv6) name of ``ip``, without the arpa suffix.

    IPv4-mapped IPv6 addresses are reversed as their IPv4 address (DNSBLs list those).
    """
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    name = dns.reversename.from_address(str(address)).to_text(omit_final_dot=True)
    for suffix in (".in-addr.arpa", ".ip6.arpa"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name  # pragma: no cover


class Resolver:
    """Non-blocking DNS for plugins: ``lookup_a/aaaa/mx/txt/ptr`` and DNS-list queries.

    Every method returns a Deferred of a list (empty for NXDOMAIN/no data) or
    fails with :class:`DNSTempError`. ``timeout`` (seconds) applies per lookup;
    a method's ``timeout`` argument overrides it for one call.
    """

    def __init__(self, servers: Sequence[Server], timeout: float = 5.0, max_in_flight: int = 100,
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        if not servers:
            raise ValueError("a resolver needs at least one nameserver")
        self.servers = [(host, int(port)) for host, port in servers]
        self.timeout = float(timeout)
        self.max_in_flight = max_in_flight
        self.reactor = reactor
        self._semaphore = DeferredSemaphore(max_in_flight)
        self._client = client.Resolver(servers=self.servers, reactor=reactor)
        #: told of every lookup's outcome and time (the engine sets it; None costs nothing)
        self.observer: Observer | None = None

    @classmethod
    def from_config(cls, config_list: Callable[[str], list[str]], reactor: Any = None) -> Resolver:
        """A resolver configured by ``resolvers``, ``dns_timeout`` and ``dns_max_in_flight``.

        ``config_list`` is the engine's lookup of config values (files, or the ``config`` hook).
        """
        entries = config_list("resolvers")
        servers = [parse_server(entry) for entry in entries] if entries else system_servers()
        timeout = float((config_list("dns_timeout") or ["5"])[0])
        in_flight = int((config_list("dns_max_in_flight") or ["100"])[0])
        return cls(servers, timeout, in_flight, reactor)

    # -- the lookups ---------------------------------------------------------
    def lookup_a(self, name: str, timeout: float | None = None) -> Deferred[list[str]]:
        """IPv4 addresses of ``name``."""
        return self._lookup("lookupAddress", name, tdns.A, lambda r: r.payload.dottedQuad(), timeout)

    def lookup_aaaa(self, name: str, timeout: float | None = None) -> Deferred[list[str]]:
        """IPv6 addresses of ``name``."""
        return self._lookup("lookupIPV6Address", name, tdns.AAAA,
                            lambda r: socket.inet_ntop(socket.AF_INET6, r.payload.address), timeout)

    def lookup_ip(self, name: str, timeout: float | None = None) -> Deferred[list[str]]:
        """IPv4 and IPv6 addresses of ``name`` (a temporary error in either fails the whole)."""
        both = defer.gatherResults([self.lookup_a(name, timeout), self.lookup_aaaa(name, timeout)],
                                   consumeErrors=True)
        return both.addCallbacks(lambda lists: lists[0] + lists[1], _first_error)

    def lookup_mx(self, name: str, timeout: float | None = None) -> Deferred[list[tuple[int, str]]]:
        """``(preference, exchange)`` pairs of ``name``, lowest preference first."""
        d = self._lookup("lookupMailExchange", name, tdns.MX,
                         lambda r: (r.payload.preference, str(r.payload.name).lower()), timeout)
        return d.addCallback(sorted)

    def lookup_txt(self, name: str, timeout: float | None = None) -> Deferred[list[str]]:
        """TXT records of ``name``, each one's strings joined."""
        return self._lookup("lookupText", name, tdns.TXT,
                            lambda r: b"".join(r.payload.data).decode("utf-8", "replace"), timeout)

    def lookup_ptr(self, ip: str, timeout: float | None = None) -> Deferred[list[str]]:
        """Names of ``ip`` (PTR records), lower case, without the final dot."""
        name = dns.reversename.from_address(ip.split("%", 1)[0]).to_text(omit_final_dot=True)
        return self._lookup("lookupPointer", name, tdns.PTR,
                            lambda r: str(r.payload.name).lower().rstrip("."), timeout)

    def dnsbl_query(self, ip: str, zone: str, timeout: float | None = None) -> Deferred[list[str]]:
        """A records of ``ip`` in the DNS list ``zone``; an empty list means "not listed"."""
        return self.lookup_a(f"{reverse_name(ip)}.{zone.strip('.')}", timeout)

    def dnsbl_txt(self, ip: str, zone: str, timeout: float | None = None) -> Deferred[list[str]]:
        """TXT records (the listing reasons) of ``ip`` in ``zone``."""
        return self.lookup_txt(f"{reverse_name(ip)}.{zone.strip('.')}", timeout)

    def rhsbl_query(self, domain: str, zone: str, timeout: float | None = None) -> Deferred[list[str]]:
        """A records of ``domain`` in the right-hand-side list ``zone``."""
        return self.lookup_a(f"{domain.strip('.')}.{zone.strip('.')}", timeout)

    # -- for blocking libraries ------------------------------------------------
    def dnspython(self, timeout: float | None = None) -> dns.resolver.Resolver:
        """A dnspython resolver using the same nameservers, for code on the thread pool."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in self.servers]
        resolver.timeout = resolver.lifetime = timeout or self.timeout
        resolver.cache = None
        return resolver

    # -- machinery -------------------------------------------------------------
    def _lookup(self, method: str, name: str, rrtype: int, convert: Callable[[Any], _T],
                timeout: float | None) -> Deferred[list[_T]]:
        name = name.rstrip(".")
        if not name or len(name) > 253 or any(not 0 < len(label) < 64 for label in name.split(".")):
            return defer.succeed([])  # not a valid DNS name: nothing can exist there
        total = timeout or self.timeout
        seconds = (total * 0.4, total * 0.6)  # one retry (UDP loss) within the lookup's timeout

        def query() -> Deferred[list[_T]]:
            d: Deferred[Any] = getattr(self._client, method)(name, timeout=seconds)
            d.addCallbacks(lambda answer: [convert(rr) for rr in answer[0] if rr.type == rrtype],
                           lambda failure: _translate(failure, name))
            if self.observer is not None:
                d.addBoth(self._report, _KINDS.get(rrtype, "other"), perf_counter())
            return d

        return self._semaphore.run(query)

    def _report(self, result: Any, kind: str, started: float) -> Any:
        """Tell the observer how a lookup ended; passes ``result`` on."""
        if self.observer is not None:
            if isinstance(result, Failure):
                outcome = "timeout" if result.check(DNSTimeout) else "error"
            else:
                outcome = "ok" if result else "empty"
            self.observer.dns_answered(kind, outcome, perf_counter() - started)
        return result


def _translate(failure: Failure, name: str) -> list[Any]:
    """NXDOMAIN -> []; timeouts and server failures -> :class:`DNSTempError`."""
    if failure.check(terror.DNSNameError):
        return []
    if failure.check(terror.DNSQueryTimeoutError, defer.TimeoutError):
        raise DNSTimeout(f"DNS lookup of {name} timed out")
    if failure.check(terror.DomainError, terror.ResolverError):
        kind = type(failure.value).__name__
        raise DNSServerFailure(f"DNS lookup of {name} failed: {kind}")
    raise DNSServerFailure(f"DNS lookup of {name} failed: {failure.getErrorMessage()}")


def _first_error(failure: Failure) -> Failure:
    """Unwrap :class:`~twisted.internet.defer.FirstError` from ``gatherResults``."""
    error = failure.value
    if isinstance(error, defer.FirstError):
        return error.subFailure
    return failure
