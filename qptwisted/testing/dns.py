"""A real DNS server for tests: authoritative zones from the test, on 127.0.0.1.

Built with :mod:`twisted.names`; it listens on UDP and TCP on a free port, so
the resolver facade (and dnspython, for code on the thread pool) talk to it
exactly as they would to a production nameserver. Nothing leaves the host::

    class MyTests(unittest.TestCase):
        def setUp(self):
            self.dns = start_dns_server(self, {
                "2.0.0.127.zen.test": [("A", "127.0.0.2"), ("TXT", "listed")],
                "example.org": [("MX", (10, "mx.example.org")), ("TXT", "v=spf1 -all")],
            })
            self.dns.servfail("broken.test")   # answers SERVFAIL
            self.dns.drop("slow.test")         # never answers: the client times out

        def test_it(self):
            engine = make_engine(["dnsbl"], config={**self.dns.config(), "dnsbl_zones": "zen.test"})

``config()`` gives the ``resolvers`` and ``dns_timeout`` config entries that
point an engine at the server; :func:`start_dns_server` registers the cleanup
(ports closed, pending resolver timers flushed) so trial sees a clean reactor.
Records are ``(TYPE, value)``: ``A``/``AAAA`` an address, ``MX`` a
``(preference, name)`` pair, ``TXT`` a string (or a tuple of strings),
``PTR``/``CNAME``/``NS`` a name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import deferLater
from twisted.names import common, server
from twisted.names import dns as tdns
from twisted.names import error as terror

RecordSpec = tuple[str, Any]


def _record(rrtype: str, value: Any, ttl: int) -> tuple[int, Any]:
    kind = rrtype.upper()
    if kind == "A":
        return tdns.A, tdns.Record_A(value, ttl)
    if kind == "AAAA":
        return tdns.AAAA, tdns.Record_AAAA(value, ttl)
    if kind == "MX":
        preference, name = value
        return tdns.MX, tdns.Record_MX(int(preference), name.encode(), ttl)
    if kind == "TXT":
        parts = (value,) if isinstance(value, str | bytes) else tuple(value)
        data = [part.encode() if isinstance(part, str) else part for part in parts]
        return tdns.TXT, tdns.Record_TXT(*data, ttl=ttl)
    if kind == "PTR":
        return tdns.PTR, tdns.Record_PTR(value.encode(), ttl)
    if kind == "CNAME":
        return tdns.CNAME, tdns.Record_CNAME(value.encode(), ttl)
    if kind == "NS":
        return tdns.NS, tdns.Record_NS(value.encode(), ttl)
    raise ValueError(f"unsupported record type {rrtype!r}")


class _ServerFailure(Exception):
    """Raised by the authority for names configured to SERVFAIL."""


class MemoryAuthority(common.ResolverBase):
    """An authority over in-memory records; unknown names are NXDOMAIN."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[bytes, list[tuple[int, Any]]] = {}
        self.failing: set[bytes] = set()
        self.dropped: set[bytes] = set()
        self.queries: list[tuple[str, str]] = []
        self._hanging: list[Deferred[Any]] = []

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:  # noqa: A002
        key = name.lower().rstrip(b".")
        self.queries.append((key.decode(), tdns.QUERY_TYPES.get(type, str(type))))
        if key in self.dropped:
            hanging: Deferred[Any] = Deferred()
            self._hanging.append(hanging)
            return hanging
        if key in self.failing:
            return defer.fail(_ServerFailure(key))
        if key not in self.records:
            return defer.fail(terror.DomainError(name))
        answers = []
        for rrtype, payload in self.records[key]:
            if rrtype == type or rrtype == tdns.CNAME or type == tdns.ALL_RECORDS:
                answers.append(tdns.RRHeader(name, rrtype, cls, payload.ttl, payload, auth=True))
        return defer.succeed((answers, [], []))  # empty answers: NODATA


class _Factory(server.DNSServerFactory):
    """Answers SERVFAIL for the configured names without logging an error."""

    def gotResolverError(self, failure: Any, protocol: Any, message: Any, address: Any) -> None:
        if failure.check(_ServerFailure):
            response = self._responseFromMessage(message=message, rCode=tdns.ESERVER)
            self.sendReply(protocol, response, address)
            return
        super().gotResolverError(failure, protocol, message, address)


class DNSServer:
    """A twisted.names server on 127.0.0.1 (UDP and TCP, same free port)."""

    def __init__(self, zone: Mapping[str, Iterable[RecordSpec]] | None = None, ttl: int = 60) -> None:
        self.authority = MemoryAuthority()
        self.ttl = ttl
        self.port = 0
        self._ports: list[Any] = []
        self._closing: list[Deferred[Any]] = []
        for name, records in (zone or {}).items():
            for rrtype, value in records:
                self.add(name, rrtype, value)

    def add(self, name: str, rrtype: str, value: Any) -> None:
        """Add one record."""
        key = name.lower().rstrip(".").encode()
        self.authority.records.setdefault(key, []).append(_record(rrtype, value, self.ttl))

    def remove(self, name: str) -> None:
        """Forget every record of ``name`` (it becomes NXDOMAIN)."""
        self.authority.records.pop(name.lower().rstrip(".").encode(), None)

    def servfail(self, name: str) -> None:
        """Answer SERVFAIL for ``name``."""
        self.authority.failing.add(name.lower().rstrip(".").encode())

    def drop(self, name: str) -> None:
        """Never answer queries for ``name`` (the client times out)."""
        self.authority.dropped.add(name.lower().rstrip(".").encode())

    @property
    def queries(self) -> list[tuple[str, str]]:
        """``(name, TYPE)`` of every query received, in order."""
        return self.authority.queries

    def start(self) -> int:
        """Listen on 127.0.0.1 (a free port, UDP and TCP); return the port."""
        factory = _Factory(authorities=[self.authority])
        factory.noisy = False
        listen: Any = reactor
        for _ in range(20):  # a free UDP port whose TCP twin may be taken: try another
            tcp = listen.listenTCP(0, factory, interface="127.0.0.1")
            port = tcp.getHost().port
            try:
                udp = listen.listenUDP(port, tdns.DNSDatagramProtocol(factory), interface="127.0.0.1")
            except CannotListenError:
                self._closing.append(defer.maybeDeferred(tcp.stopListening))
                continue
            self.port = port
            self._ports = [udp, tcp]
            return port
        raise CannotListenError("127.0.0.1", 0, OSError("no free port for UDP and TCP"))

    def config(self, timeout: float = 1.0) -> dict[str, str]:
        """Config entries that point an engine's resolver at this server."""
        return {"resolvers": f"127.0.0.1:{self.port}", "dns_timeout": f"{timeout:g}"}

    def resolver(self, timeout: float = 1.0) -> Any:
        """A :class:`qptwisted.lib.dns.Resolver` using this server."""
        from qptwisted.lib.dns import Resolver

        return Resolver([("127.0.0.1", self.port)], timeout)

    def stop(self) -> Deferred[Any]:
        """Close the ports; fires when they are closed and the reactor is quiet."""
        ports, self._ports = self._ports, []
        self.authority._hanging.clear()  # never answered; nothing waits on them any more
        closing = [defer.maybeDeferred(port.stopListening) for port in ports] + self._closing
        d: Deferred[Any] = defer.gatherResults(closing)
        return d.addCallback(lambda _: settle())


def settle() -> Deferred[None]:
    """Let the reactor run the zero-delay calls left by closed UDP client ports."""
    return deferLater(reactor, 0, lambda: None).addCallback(  # type: ignore[arg-type]
        lambda _: deferLater(reactor, 0, lambda: None))  # type: ignore[arg-type]


def start_dns_server(testcase: Any, zone: Mapping[str, Iterable[RecordSpec]] | None = None) -> DNSServer:
    """Start a :class:`DNSServer` for a trial test; it is stopped in the test's cleanup."""
    dns_server = DNSServer(zone)
    dns_server.start()
    testcase.addCleanup(dns_server.stop)
    return dns_server
