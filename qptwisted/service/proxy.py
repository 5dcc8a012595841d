"""The PROXY protocol layer in front of the SMTP protocol.

When the config file ``proxy_hosts`` lists addresses (one IP or CIDR
network per line, IPv4 and IPv6; ``#`` starts a comment), every connection
of the listener first meets a :class:`ProxyReceiver`:

- a connection **from a listed proxy** must start with a PROXY header
  (version 1 or 2, :mod:`qptwisted.service.proxyheader`). Nothing is sent
  until the header is complete; then the SMTP protocol is built for the
  *real* client address (the per-IP connection caps count that address),
  the connection's ``getPeer()``/``getHost()`` answer the addresses from
  the header, and the SMTP protocol starts: ``pre-connection`` and
  ``connect`` see the real client, then the greeting goes out. LOCAL
  headers (the proxy's health checks) keep the proxy's own addresses.
- a connection **from anywhere else** is SMTP from its first byte, and must
  not start with a PROXY header: one that does is refused. (Its first bytes
  are held only while they could still begin a header: at most 11 bytes of
  ``PROXY `` or of the v2 signature.)

A missing, malformed or oversized header, one that does not arrive whole
within ``proxy_timeout`` seconds (default 10) of the connect, and a header
from an address not listed get ``421 4.7.0`` with the reason, a log line
(naming the peer) and the connection is closed.

The layer is a protocol wrapped around :class:`~qptwisted.smtp.protocol.SMTPProtocol`
that passes everything through once the header is read; it works on every
listener whose factory is an :class:`~qptwisted.service.server.SMTPFactory`,
so in prefork workers (``--workers``) too. A header in clear text has to
come before a TLS handshake: with PROXY, use plain listeners with STARTTLS,
or implicit TLS through the ``tls`` plugin's ``tls_implicit_ports`` (which
starts TLS after the header), not a ``tls:``/``ssl:`` endpoint.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from qptwisted.core.codes import LOGINFO, LOGWARN
from qptwisted.core.replies import format_reply
from qptwisted.lib.ipmatch import IPMatcher
from qptwisted.service import proxyheader
from qptwisted.service.proxyheader import ProxyHeader, ProxyHeaderError

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine

#: seconds a listed proxy has to send the whole header (config ``proxy_timeout``)
DEFAULT_TIMEOUT = 10.0


class ProxyPolicy:
    """Which peers are proxies, and how long their header may take; built once per engine."""

    def __init__(self, trusted: IPMatcher, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.trusted = trusted
        self.timeout = timeout

    @classmethod
    def from_engine(cls, engine: Engine) -> ProxyPolicy | None:
        """The policy the engine's config directory describes; None without ``proxy_hosts``."""
        entries = [line.split("#", 1)[0].strip() for line in engine.config.get_list("proxy_hosts")]
        trusted = IPMatcher(entry for entry in entries if entry)
        if not trusted:
            return None
        return cls(trusted, engine.config.get_float("proxy_timeout", DEFAULT_TIMEOUT))


_policies: weakref.WeakKeyDictionary[Any, ProxyPolicy | None] = weakref.WeakKeyDictionary()


def policy_for(engine: Engine) -> ProxyPolicy | None:
    """The engine's PROXY policy, read from its config on first use (a reload builds a new engine)."""
    try:
        return _policies[engine]
    except KeyError:
        policy = _policies[engine] = ProxyPolicy.from_engine(engine)
        return policy


def proxy_layer(factory: Any, addr: IAddress | None) -> Protocol | None:
    """The PROXY layer for a new connection, or None when ``proxy_hosts`` lists no proxy.

    ``factory`` is the listener's :class:`~qptwisted.service.server.SMTPFactory`:
    its ``engine`` and its ``smtp_protocol(addr)``, which builds the SMTP
    protocol (or the 421 of a full house) for the real client.
    """
    policy = policy_for(factory.engine)
    if policy is None:
        return None
    return ProxyReceiver(factory, policy, policy.trusted.matches(getattr(addr, "host", "")))


def _address(host: str, port: int) -> IPv4Address | IPv6Address:
    return IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)


@implementer(IHandshakeListener)
class ProxyReceiver(Protocol):
    """Reads the PROXY header (or checks there is none), then is the SMTP protocol's transport.

    To the protocol inside it forwards everything to the real transport,
    except ``getPeer``/``getHost``, which answer the addresses of the header.
    """

    def __init__(self, factory: Any, policy: ProxyPolicy, trusted: bool) -> None:
        self.factory = factory
        self.policy = policy
        self.trusted = trusted
        self.inner: Protocol | None = None
        self._buffer = b""
        self._sniffing = not trusted  # untrusted: the first bytes must not be a PROXY header
        self._timer: IDelayedCall | None = None
        self._peer: IAddress | None = None
        self._host: IAddress | None = None
        self._refused = False

    # -- the real connection's side ----------------------------------------------
    def connectionMade(self) -> None:
        """A proxy: wait for the header (bounded). Anyone else: SMTP at once."""
        transport: Any = self.transport
        directlyProvides(self, providedBy(transport), IHandshakeListener)
        if self.trusted:
            self._timer = self.engine.clock.callLater(self.policy.timeout, self._too_slow)
            return
        self._start(transport.getPeer(), transport.getHost())

    @property
    def engine(self) -> Engine:
        """The listener's engine."""
        return self.factory.engine  # type: ignore[no-any-return]

    def dataReceived(self, data: bytes) -> None:
        """The header first (proxies), a check of the first bytes (others), then pass through."""
        if self.inner is not None and not self._sniffing:
            self.inner.dataReceived(data)
            return
        if self._refused:
            return
        self._buffer += data
        if self._sniffing:
            self._sniff()
        else:
            self._read_header()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Stop the header timer; tell the protocol inside, if it started."""
        self.connected = 0  # what the drain reads as ``transport.connected`` of the protocol inside
        self._cancel_timer()
        if self.inner is not None:
            self.inner.connectionLost(reason)  # type: ignore[arg-type]

    def handshakeCompleted(self) -> None:
        """TLS (STARTTLS or implicit, started by the protocol inside) is up: pass it on."""
        if IHandshakeListener.providedBy(self.inner):
            self.inner.handshakeCompleted()  # type: ignore[union-attr]

    # -- reading the header ---------------------------------------------------------
    def _read_header(self) -> None:
        try:
            header = proxyheader.parse(self._buffer)
        except ProxyHeaderError as err:
            self._refuse(str(err), "Invalid PROXY header")
            return
        if header is None:
            return
        self._cancel_timer()
        rest, self._buffer = self._buffer[header.length:], b""
        transport: Any = self.transport
        peer, host = self._addresses(header, transport)
        self.engine.log(LOGINFO, f"PROXY v{header.version} from {transport.getPeer().host}: client "
                        f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
                        + (" (LOCAL)" if header.local else ""))
        self._start(peer, host)
        if rest:
            self._pass_on(rest)

    @staticmethod
    def _addresses(header: ProxyHeader, transport: Any) -> tuple[IAddress, IAddress]:
        if header.source is None or header.destination is None:
            return transport.getPeer(), transport.getHost()
        return _address(*header.source), _address(*header.destination)

    def _sniff(self) -> None:
        found = proxyheader.signature(self._buffer)
        if found is None:
            return  # too short to tell: wait for the next bytes
        self._sniffing = False
        if found:
            self._refuse("PROXY header from an address not in proxy_hosts",
                         "PROXY header not accepted from your address")
            return
        data, self._buffer = self._buffer, b""
        self._pass_on(data)

    def _pass_on(self, data: bytes) -> None:
        """Give bytes read before the protocol inside took over to whoever reads the connection now."""
        transport: Any = self.transport
        if getattr(transport, "TLS", False) and getattr(transport, "protocol", self) is not self:
            # the protocol inside started implicit TLS in its connect hook: these bytes are the handshake
            transport.protocol.dataReceived(data)
        elif self.inner is not None:
            self.inner.dataReceived(data)

    def _too_slow(self) -> None:
        self._timer = None
        self._refuse(f"no complete PROXY header within {self.policy.timeout:g} s "
                     f"({len(self._buffer)} bytes came)", "PROXY header timeout")

    def _refuse(self, why: str, reply: str) -> None:
        self._refused = True
        self._cancel_timer()
        self._buffer = b""
        transport: Any = self.transport
        peer = transport.getPeer()
        self.engine.log(LOGWARN, f"PROXY: refused connection from {getattr(peer, 'host', '?')}:"
                        f"{getattr(peer, 'port', '?')}: {why}")
        transport.write(format_reply(421, f"{self.engine.settings.me} {reply}, closing connection", "4.7.0"))
        transport.loseConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _start(self, peer: IAddress, host: IAddress) -> None:
        """Build the SMTP protocol for the real client and connect it to us."""
        self._peer, self._host = peer, host
        self.inner = self.factory.smtp_protocol(peer)
        self.inner.makeConnection(self)  # type: ignore[union-attr]

    # -- the transport the protocol inside sees ------------------------------------------
    def getPeer(self) -> IAddress:
        """The real client (from the header)."""
        return self._peer if self._peer is not None else self.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        """The address the client connected to (from the header)."""
        return self._host if self._host is not None else self.transport.getHost()  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        """Send bytes."""
        self.transport.write(data)  # type: ignore[union-attr]

    def writeSequence(self, data: Any) -> None:
        """Send several byte strings."""
        self.transport.writeSequence(data)  # type: ignore[union-attr]

    def loseConnection(self) -> None:
        """Close after pending writes."""
        self.transport.loseConnection()  # type: ignore[union-attr]

    def abortConnection(self) -> None:
        """Close at once."""
        self.transport.abortConnection()  # type: ignore[union-attr]

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """The protocol inside produces for the real transport directly."""
        self.transport.registerProducer(producer, streaming)  # type: ignore[union-attr]

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self.transport.unregisterProducer()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        """Stop reading from the socket."""
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        """Read from the socket again."""
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        """Stop for good."""
        self.transport.stopProducing()  # type: ignore[union-attr]

    def startTLS(self, context: Any, normal: bool = True) -> None:
        """Switch the real connection to TLS; its handshake reports back through us."""
        self.transport.startTLS(context, normal)  # type: ignore[union-attr]

    def __getattr__(self, name: str) -> Any:
        # the rest of the transport (getHandle, connected, disconnecting, TLS ...) is the real one's
        if name.startswith("__") or "transport" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["transport"], name)
