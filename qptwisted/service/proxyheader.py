"""The PROXY protocol header, versions 1 (text) and 2 (binary): parse and build.

A load balancer (HAProxy ``send-proxy``/``send-proxy-v2``, AWS NLB, nginx
``proxy_protocol``) puts one header in front of the client's bytes to say
who the client really is. :func:`parse` reads it from the start of a
buffer: it answers ``None`` while the header is incomplete, a
:class:`ProxyHeader` once it is whole, and raises :class:`ProxyHeaderError`
for anything that is not a valid header, as early as the bytes allow. It
never reads past the header, and never needs more than :data:`V1_MAX` bytes
(version 1) or ``16 +`` :data:`V2_MAX_PAYLOAD` bytes (version 2) to decide.

What is accepted, after the specification (haproxy's ``proxy-protocol.txt``):

- v1: ``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`` with single spaces, the
  address family matching the addresses, ports 0..65535 in decimal; ``PROXY
  UNKNOWN ...\\r\\n`` (the proxy's own health check) is LOCAL.
- v2: the 12-byte signature, version 2, command LOCAL or PROXY; PROXY over
  TCP/IPv4 or TCP/IPv6 gives the addresses, PROXY with an unspecified or
  UNIX family is treated as LOCAL (the header carries no IP), a datagram
  transport is refused. TLVs after the addresses are skipped unread.
- An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what HAProxy sends
  from an IPv6 listener) is given as the IPv4 address.

LOCAL means: use the addresses of the connection itself.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

#: the longest version 1 header, CRLF included (the specification's bound)
V1_MAX = 107
#: the 12 bytes every version 2 header starts with
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: the largest version 2 address block with TLVs we accept (proxies in use send well under 300)
V2_MAX_PAYLOAD = 4096
_V1_PREFIX = b"PROXY "
_V2_FIXED = 16
_INET, _INET6, _UNIX = 1, 2, 3
_STREAM, _DGRAM = 1, 2
_LOCAL, _PROXY = 0, 1

Address = tuple[str, int]


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY header; the message says why (for the log)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed header.

    ``source`` is the real client and ``destination`` the address it
    connected to (both None for LOCAL); ``length`` is how many bytes the
    header took, so what follows it is the client's.
    """

    version: int
    length: int
    source: Address | None = None
    destination: Address | None = None

    @property
    def local(self) -> bool:
        """True for LOCAL (and UNKNOWN): the connection's own addresses stand."""
        return self.source is None


def signature(data: bytes) -> bool | None:
    """Does ``data`` start like a PROXY header? True, False, or None while too short to say."""
    for prefix in (_V1_PREFIX, V2_SIGNATURE):
        common = min(len(data), len(prefix))
        if data[:common] == prefix[:common]:
            return True if common == len(prefix) else None
    return False


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None if it is not complete yet.

    Raises :class:`ProxyHeaderError` as soon as the bytes cannot become a
    valid header (wrong signature, bad syntax, too long).
    """
    start = signature(data)
    if start is False:
        raise ProxyHeaderError("no PROXY header (the connection must start with one)")
    if start is None:
        return None
    if data[:1] == b"P":
        return _parse_v1(data)
    return _parse_v2(data)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if b"\n" in data[:V1_MAX]:
            raise ProxyHeaderError("PROXY v1 header ends without CRLF")
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 header longer than {V1_MAX} bytes")
        return None
    line = data[:end]
    if b"\n" in line or b"\r" in line:
        raise ProxyHeaderError("PROXY v1 header has a stray line ending")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    parts = text.split(" ")
    length = end + 2
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, length)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"PROXY v1 header malformed: {text[:V1_MAX]!r}")
    version = 4 if parts[1] == "TCP4" else 6
    source = (_ip(parts[2], version), _port(parts[4]))
    destination = (_ip(parts[3], version), _port(parts[5]))
    return ProxyHeader(1, length, source, destination)


def _ip(text: str, version: int) -> str:
    try:
        address = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not an IPv{version} address") from None
    return _normal(address)


def _port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 65535 \
            or (len(text) > 1 and text[0] == "0"):
        raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not a port")
    return int(text)


def _normal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < _V2_FIXED:
        return None
    version_command, family_protocol, size = struct.unpack("!BBH", data[12:16])
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {version_command >> 4}")
    command = version_command & 0x0F
    if command not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"PROXY v2 header with unknown command {command}")
    if size > V2_MAX_PAYLOAD:
        raise ProxyHeaderError(f"PROXY v2 header of {size} bytes (at most {V2_MAX_PAYLOAD} accepted)")
    length = _V2_FIXED + size
    if len(data) < length:
        return None
    family, protocol = family_protocol >> 4, family_protocol & 0x0F
    if family > _UNIX or protocol > _DGRAM:
        raise ProxyHeaderError(f"PROXY v2 header with unknown address family {family_protocol:#04x}")
    if command == _LOCAL or family not in (_INET, _INET6):
        return ProxyHeader(2, length)
    if protocol != _STREAM:
        raise ProxyHeaderError("PROXY v2 header for a datagram or unspecified transport")
    payload = data[_V2_FIXED:length]
    if family == _INET:
        if size < 12:
            raise ProxyHeaderError(f"PROXY v2 TCP4 address block of {size} bytes (12 needed)")
        src, dst, sport, dport = struct.unpack("!4s4sHH", payload[:12])
        kind = socket.AF_INET
    else:
        if size < 36:
            raise ProxyHeaderError(f"PROXY v2 TCP6 address block of {size} bytes (36 needed)")
        src, dst, sport, dport = struct.unpack("!16s16sHH", payload[:36])
        kind = socket.AF_INET6
    source = (_normal(ipaddress.ip_address(socket.inet_ntop(kind, src))), sport)
    destination = (_normal(ipaddress.ip_address(socket.inet_ntop(kind, dst))), dport)
    return ProxyHeader(2, length, source, destination)


# -- building headers (tests, tools, a proxy written in Python) ----------------------
def v1_header(source: Address | None, destination: Address | None) -> bytes:
    """A version 1 header; ``None`` addresses give ``PROXY UNKNOWN``."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    family = "TCP6" if ":" in source[0] else "TCP4"
    return (f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n").encode("ascii")


def v2_header(source: Address | None, destination: Address | None, tlvs: bytes = b"") -> bytes:
    """A version 2 header (PROXY over TCP, or LOCAL when ``source`` is None), with raw ``tlvs``."""
    if source is None or destination is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, len(tlvs)) + tlvs
    if ":" in source[0]:
        kind, family = socket.AF_INET6, 0x21
    else:
        kind, family = socket.AF_INET, 0x11
    block = (socket.inet_pton(kind, source[0]) + socket.inet_pton(kind, destination[0])
             + struct.pack("!HH", source[1], destination[1]) + tlvs)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(block)) + block
