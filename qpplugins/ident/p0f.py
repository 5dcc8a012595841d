"""ident/p0f: the client's operating system, from a passive fingerprint by p0f 3.

p0f (``apt-get install p0f``) watches the network interface and guesses
the operating system of every host that opens a TCP connection from the
packets it sends. At ``connect`` this plugin asks p0f about the client
through p0f's API socket (``p0f -i eth0 -s /run/p0f.sock``) and stores the
answer in the connection note ``p0f``, a dict::

    {"genre": "Windows", "detail": "7 or 8", "distance": 12, "link_type": "Ethernet or modem",
     "uptime_min": 4321, "first_seen": ..., "last_seen": ..., "total_conn": 3, "last_nat": 0,
     "last_chg": 0, "bad_sw": 0, "os_match_q": 0, "http_name": "", "http_flavor": "", "language": ""}

for other plugins (``greylisting p0f genre,Windows``, ``karma``, your own).
A client p0f has not seen, or a p0f that does not answer within
``timeout``, leaves no note: the plugin only advises and never holds mail
up. With ``smite_os`` a client whose system matches loses a point of karma;
clients whose system is listed in ``config/p0f_blocked_operating_systems``
are refused at ``connect`` (``reject``/``reject_type``); ``add_headers``
adds ``X-P0F-Genre``, ``X-P0F-Detail``, ``X-P0F-Distance`` and
``X-P0F-Link`` to the message.

Only p0f 3's API is spoken (p0f 2 is long gone from distributions). The
query is Twisted-native: nothing blocks.

Arguments:

``SOCKET``
    p0f's API socket (``-s`` of p0f); also ``socket PATH``.
``version 3``
    accepted for qpsmtpd's lines; 2 is refused.
``local_ip IP``
    qpsmtpd's setting for p0f 2; accepted and ignored.
``smite_os REGEX``
    take a point of karma from clients whose ``genre detail`` matches
    (case-insensitive), e.g. ``windows``.
``add_headers 0|1``
    add the ``X-P0F-*`` headers (default 0).
``query_timeout N``
    seconds to wait for p0f (default 2).
``reject 1|0|naughty``, ``reject_type perm|temp|...``
    what to do with a blocked system (default: refuse, ``perm``).

Config file ``p0f_blocked_operating_systems``: one regular expression a
line, matched (case-insensitive) against ``genre detail``.

config/plugins::

    ident/p0f /run/p0f.sock smite_os windows add_headers 1
"""

from __future__ import annotations

import ipaddress
import re
import struct
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from qptwisted import DECLINED, LOGINFO, LOGWARN, ArgumentError, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin, reject_type_argument

QUERY_MAGIC = 0x50304601
RESPONSE_MAGIC = 0x50304602
STATUS_BADQUERY, STATUS_OK, STATUS_NOMATCH = 0x00, 0x10, 0x20
_QUERY = struct.Struct("<IB16s")
_RESPONSE = struct.Struct("<IIIIIIIIIhBB32s32s32s32s32s32s")
_FIELDS = ("first_seen", "last_seen", "total_conn", "uptime_min", "up_mod_days", "last_nat", "last_chg",
           "distance", "bad_sw", "os_match_q", "genre", "detail", "http_name", "http_flavor", "link_type",
           "language")


class P0fError(Exception):
    """p0f refused the query or answered nonsense."""


def encode_query(ip: str) -> bytes:
    """p0f 3's query for ``ip`` (an IPv4-mapped IPv6 address is asked as IPv4)."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return _QUERY.pack(QUERY_MAGIC, address.version, address.packed.ljust(16, b"\0"))


def decode_response(data: bytes) -> dict[str, Any] | None:
    """The fields of p0f's answer; None if p0f has not seen the host."""
    magic, status, *values = _RESPONSE.unpack(data)
    if magic != RESPONSE_MAGIC:
        raise P0fError(f"bad answer magic {magic:#x}")
    if status == STATUS_NOMATCH:
        return None
    if status != STATUS_OK:
        raise P0fError(f"p0f refused the query (status {status:#x})")
    fields = dict(zip(_FIELDS, values, strict=True))
    for key in ("genre", "detail", "http_name", "http_flavor", "link_type", "language"):
        fields[key] = fields[key].split(b"\0", 1)[0].decode("ascii", "replace")
    return fields


class _Query(Protocol):
    def __init__(self, query: bytes) -> None:
        self.query = query
        self.buffer = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.query)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= _RESPONSE.size and not self.done.called:
            assert self.transport is not None
            self.transport.loseConnection()
            self.done.callback(self.buffer[:_RESPONSE.size])

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.errback(P0fError(f"p0f closed the socket after {len(self.buffer)} bytes"))


class P0f(PolicyPlugin):
    """Passive OS fingerprints from p0f 3."""

    name = "ident/p0f"
    timeout = 30.0
    socket: str = arg.str(help="p0f's API socket (-s of p0f)", positional=True)
    version: int = arg.int(3, "p0f's API version (only 3)")
    local_ip: str | None = arg.str(None, "qpsmtpd's setting for p0f 2; ignored")
    smite_os: str | None = arg.str(None, "take a point of karma from clients whose system matches this regex")
    add_headers: bool = arg.bool(False, "add X-P0F-* headers to the message")
    query_timeout: float = arg.duration(2, "seconds to wait for p0f", aliases=("wait",))
    reject_type = reject_type_argument("perm")
    #: the reactor used to connect (timers use the engine's clock)
    reactor: Any = None

    def register(self, *args: str) -> None:
        """Check the version, compile the patterns."""
        if self.version != 3:
            raise ArgumentError(f"plugin {self.plugin_name}: argument version: only p0f 3 is supported")
        try:
            self.smite = re.compile(self.smite_os, re.IGNORECASE) if self.smite_os else None
            self.blocked = [re.compile(line.strip(), re.IGNORECASE)
                            for line in self.config_list("p0f_blocked_operating_systems")
                            if line.strip() and not line.lstrip().startswith("#")]
        except re.error as err:
            raise ArgumentError(f"plugin {self.plugin_name}: bad regular expression: {err}") from None

    def query(self, ip: str) -> Deferred[dict[str, Any] | None]:
        """Ask p0f about ``ip``; fails with :class:`P0fError` or a connection error."""
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        protocol = _Query(encode_query(ip))
        connecting = connectProtocol(UNIXClientEndpoint(reactor, self.socket), protocol)
        connecting.addErrback(lambda failure: protocol.done.errback(failure) if not protocol.done.called
                              else None)
        timer = self.clock.callLater(self.query_timeout, self._give_up, protocol)

        def stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return protocol.done.addBoth(stop_timer).addCallback(decode_response)

    def _give_up(self, protocol: _Query) -> None:
        if protocol.transport is not None:
            protocol.transport.abortConnection()  # type: ignore[attr-defined]
        if not protocol.done.called:
            protocol.done.errback(P0fError(f"no answer within {self.query_timeout:g}s"))

    # -- hooks ---------------------------------------------------------------
    def hook_connect(self, transaction: Transaction) -> Deferred[Any]:
        ip = transaction.connection.remote_ip

        def failed(failure: Failure) -> HookAnswer:
            self.log(LOGWARN, f"cannot ask p0f at {self.socket}: {failure.getErrorMessage()}")
            return DECLINED

        return self.query(ip).addCallbacks(self._judge, failed, callbackArgs=(transaction,))

    def _judge(self, fields: dict[str, Any] | None, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        if fields is None:
            self.log(LOGINFO, f"p0f has not seen {connection.remote_ip}")
            return DECLINED
        connection.notes["p0f"] = fields
        system = f"{fields['genre']} {fields['detail']}".strip()
        self.log(LOGINFO, f"{system or 'unknown system'}, distance {fields['distance']}, "
                          f"link {fields['link_type'] or 'unknown'}")
        if not system:
            return DECLINED
        if self.smite is not None and self.smite.search(system):
            self.log(LOGINFO, f"smite_os: {system}")
            self.adjust_karma(transaction, -1)
        if any(pattern.search(system) for pattern in self.blocked) and not self.is_immune(transaction):
            return self.get_reject(transaction, f"Mail from {fields['genre']} systems is not accepted here",
                                   f"blocked system {system}")
        return DECLINED

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        fields = transaction.connection.notes.get("p0f")
        if not self.add_headers or not isinstance(fields, dict):
            return DECLINED
        for key, header in (("genre", "Genre"), ("detail", "Detail"), ("distance", "Distance"),
                            ("link_type", "Link")):
            value = fields.get(key)
            if value not in (None, ""):
                transaction.prepend_header(f"X-P0F-{header}", str(value))
        return DECLINED
