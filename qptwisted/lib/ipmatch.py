"""Matching client IPs against lists of addresses, prefixes and CIDR networks."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IPMatcher:
    """Matches an IP against qpsmtpd-style entries.

    An entry is an address (``192.0.2.1``, ``::1``), a CIDR network
    (``192.0.2.0/24``, ``2001:db8::/32``) or an old-style octet prefix
    (``192.168.`` or ``10``). IPv4-mapped IPv6 clients match IPv4 entries.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[Network] = []
        for entry in entries:
            entry = entry.split()[0] if entry.split() else ""
            if not entry:
                continue
            self.networks.append(self._network(entry))

    @staticmethod
    def _network(entry: str) -> Network:
        if "/" not in entry and ":" not in entry and entry.count(".") < 3:
            octets = [part for part in entry.split(".") if part]
            prefix = len(octets) * 8
            entry = ".".join(octets + ["0"] * (4 - len(octets))) + f"/{prefix}"
        try:
            return ipaddress.ip_network(entry, strict=False)
        except ValueError as err:
            raise ValueError(f"not an IP address or network: {entry!r}") from err

    def __bool__(self) -> bool:
        return bool(self.networks)

    def matches(self, ip: str) -> bool:
        """True if ``ip`` is in one of the entries."""
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
