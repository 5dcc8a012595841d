"""helo: check the name the client gives in HELO/EHLO.

Tests by ``policy``:

``lenient`` (default)
    ``badhelo`` (in ``config/badhelo``), ``localhost`` from a non-loopback
    IP, an address literal that is not the client's IP.
``rfc``
    also a bare IP without brackets, a name that is not a fully qualified
    domain name, a name without A/AAAA records (``HELO hostname did not
    resolve``) and a client IP without PTR name (``no reverse DNS for IP``);
    the lookups go through the engine's resolver, and a DNS error skips the
    test (logged) instead of refusing.
``strict``
    also refuses when neither the name's addresses match the client's
    network nor the client's PTR names the name's domain (``That HELO
    hostname fails FCrDNS``); notes ``helo_forward_match`` and
    ``helo_reverse_match`` record what matched.

``config/badhelo`` lines are names (case-insensitive) or regular
expressions (lines with regex characters); a regex starting with ``!``
matches names that do *not* match it. Replies: ``I do not believe you are
NAME.``, ``You are not localhost``, ``Forged IPs not accepted here``, ``Plain
IP is invalid HELO hostname (RFC 2821)``, ``HELO name is not fully qualified.
Read RFC 2821``, ``HELO name contains invalid FQDN characters. Read RFC
1035``. A missing HELO name is tolerated (logged). Immune clients are not
checked. Each message gets an ``X-HELO`` header with the name.

Arguments: ``policy lenient|rfc|strict``, ``badhelo FILE`` (another config
file name), ``timeout N`` (seconds per DNS lookup, default 5), and
``reject``, ``reject_type``, ``loglevel``. Better than qpsmtpd: IPv6 address literals and ``::1`` for
localhost are understood, and the DNS tests never block.

config/plugins::

    helo policy rfc reject 1
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from qptwisted import DECLINED, LOGERROR, LOGINFO, HookAnswer, Transaction, arg
from qptwisted.lib.dns import DNSTempError
from qptwisted.lib.policy import PolicyPlugin

_BADHELO_REGEX = re.compile(r"[{}\[\]()^$|*+?\\!]")
_PLAIN_IP = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\Z")
_FQDN_CHARS = re.compile(r"[A-Za-z0-9.-]+\Z")

Failure = tuple[str, str] | None


class Helo(PolicyPlugin):
    """Check HELO/EHLO names by policy."""

    name = "helo"
    policy: str = arg.choice(("lenient", "rfc", "strict"), "lenient", "which tests run (see above)")
    badhelo: str = arg.str("badhelo", "the config file of refused names")
    dns_timeout: float = arg.duration(5, "seconds per DNS lookup", aliases=("timeout",))

    def register(self, *args: str) -> None:
        """Choose the tests for the policy and read ``badhelo``."""
        policy = self.policy
        tests: list[Callable[[Transaction, str], Failure]] = [
            self.is_in_badhelo, self.invalid_localhost, self.is_forged_literal]
        if policy in ("rfc", "strict"):
            tests += [self.is_plain_ip, self.is_not_fqdn]
        self.tests = tests
        self.dns_tests = ["no_forward_dns", "no_reverse_dns"] if policy != "lenient" else []
        if policy == "strict":
            self.dns_tests.append("no_matching_dns")
        self.bad_names: list[tuple[str, re.Pattern[str] | None, bool]] = []
        for line in self.config_list(self.badhelo):
            bad = line.strip()
            if not bad:
                continue
            if _BADHELO_REGEX.search(bad):
                negate = bad.startswith("!")
                self.bad_names.append((bad, re.compile(bad[1:] if negate else bad), negate))
            else:
                self.bad_names.append((bad.lower(), None, False))

    def is_in_badhelo(self, transaction: Transaction, host: str) -> Failure:
        """The name is listed (or matches a pattern) in badhelo."""
        error = f"I do not believe you are {host}."
        lower = host.lower()
        for bad, pattern, negate in self.bad_names:
            if pattern is None:
                if lower == bad:
                    return error, "in badhelo"
            elif bool(pattern.search(lower)) != negate:
                return error, f"badhelo pattern match ({bad})"
        return None

    def invalid_localhost(self, transaction: Transaction, host: str) -> Failure:
        """``localhost`` from anything but a loopback address."""
        if host.lower() != "localhost":
            return None
        if _is_loopback(transaction.connection.remote_ip):
            return None
        return "You are not localhost", "invalid localhost"

    def is_forged_literal(self, transaction: Transaction, host: str) -> Failure:
        """An address literal that is not the client's address."""
        literal = _literal(host)
        if literal is None:
            return None
        if _same_ip(literal, transaction.connection.remote_ip):
            return None
        return "Forged IPs not accepted here", "forged IP literal"

    def is_plain_ip(self, transaction: Transaction, host: str) -> Failure:
        """A bare IPv4 address instead of a name."""
        if not _PLAIN_IP.match(host):
            return None
        return "Plain IP is invalid HELO hostname (RFC 2821)", "plain IP"

    def is_not_fqdn(self, transaction: Transaction, host: str) -> Failure:
        """Not a fully qualified domain name (address literals are fine)."""
        if _literal(host) is not None:
            return None
        if "." not in host:
            return "HELO name is not fully qualified. Read RFC 2821", "not FQDN"
        if not _FQDN_CHARS.match(host):
            return "HELO name contains invalid FQDN characters. Read RFC 1035", "invalid FQDN chars"
        return None

    def hook_helo(self, transaction: Transaction, host: str = "", *args: str) -> HookAnswer:
        if not host:
            self.log(LOGINFO, "fail, tolerated missing HELO")
            return DECLINED
        if transaction.connection.notes.get("whitelisthelo") or self.is_immune(transaction):
            return DECLINED
        for test in self.tests:
            failure = test(transaction, host)
            if failure is not None:
                self.adjust_karma(transaction, -1)
                return self.get_reject(transaction, *failure)
        if self.dns_tests:
            return Deferred.fromCoroutine(self.dns_checks(transaction, host))
        self.log(LOGINFO, "pass")
        return DECLINED

    async def dns_checks(self, transaction: Transaction, host: str) -> HookAnswer:
        """The DNS tests of the policy, in order; the first failure refuses."""
        for name in self.dns_tests:
            failure = await getattr(self, name)(transaction, host)
            if failure is not None:
                self.adjust_karma(transaction, -1)
                return self.get_reject(transaction, *failure)
        self.log(LOGINFO, "pass")
        return DECLINED

    async def no_forward_dns(self, transaction: Transaction, host: str) -> Failure:
        """The name has no A/AAAA record; notes ``helo_forward_match`` if one is the client's."""
        if _literal(host) is not None:
            return None
        try:
            addresses = await self.engine.resolver.lookup_ip(host, self.dns_timeout)
        except DNSTempError as err:
            self.log(LOGERROR, f"skip, forward lookup failed ({err})")
            return None
        if not addresses:
            return "HELO hostname did not resolve", "fail, HELO forward DNS"
        for address in addresses:
            if _same_network(address, transaction.connection.remote_ip):
                transaction.connection.notes["helo_forward_match"] = True
                break
        return None

    async def no_reverse_dns(self, transaction: Transaction, host: str) -> Failure:
        """The client's IP has no PTR name; notes ``helo_reverse_match`` if one matches the name."""
        ip = transaction.connection.remote_ip
        try:
            names = await self.engine.resolver.lookup_ptr(ip, self.dns_timeout)
        except DNSTempError as err:
            self.log(LOGERROR, f"skip, reverse lookup of {ip} failed ({err})")
            return None
        if not names:
            return f"no reverse DNS for {ip}", "no rDNS"
        for name in names:
            if _same_domain(name, host.lower().rstrip(".")):
                transaction.connection.notes["helo_reverse_match"] = True
                break
        return None

    async def no_matching_dns(self, transaction: Transaction, host: str) -> Failure:
        """Neither the name's addresses nor the IP's names match (strict)."""
        notes = transaction.connection.notes
        if notes.get("helo_forward_match") or notes.get("helo_reverse_match"):
            return None
        return "That HELO hostname fails FCrDNS", "no matching DNS"

    hook_ehlo = hook_helo

    def hook_data_post(self, transaction: Transaction, *args: Any) -> HookAnswer:
        hello_host = transaction.connection.hello_host
        if hello_host:
            del transaction.header["X-HELO"]
            transaction.prepend_header("X-HELO", hello_host)
        return DECLINED


def _literal(host: str) -> str | None:
    if len(host) > 2 and host[0] == "[" and host[-1] == "]":
        inner = host[1:-1]
        return inner[5:] if inner[:5].lower() == "ipv6:" else inner
    return None


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _same_ip(a: str, b: str) -> bool:
    first, second = _address(a), _address(b)
    return first is not None and first == second


def _same_network(a: str, b: str) -> bool:
    """The same address, or the same /24 (IPv4) or /64 (IPv6), as qpsmtpd's forward match."""
    first, second = _address(a), _address(b)
    if first is None or second is None or first.version != second.version:
        return False
    prefix = 24 if first.version == 4 else 64
    return ipaddress.ip_network(f"{first}/{prefix}", strict=False) == \
        ipaddress.ip_network(f"{second}/{prefix}", strict=False)


def _same_domain(dns_name: str, helo_name: str) -> bool:
    """The same name, or the same last two labels (qpsmtpd's reverse match)."""
    if dns_name.count(".") < 1:
        return False
    return dns_name == helo_name or dns_name.split(".")[-2:] == helo_name.split(".")[-2:]


def _is_loopback(ip: str) -> bool:
    address = _address(ip)
    return address is not None and address.is_loopback
