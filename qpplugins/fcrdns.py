"""fcrdns: forward-confirmed reverse DNS of the client (RFC 8601 ``iprev``).

At ``connect`` the client's IP is looked up (PTR), each name found is looked
up forward (A/AAAA), and the check passes when one of them leads back to the
IP. The result goes into Authentication-Results as ``iprev=pass|fail|
temperror policy.iprev=<ip> (<name>)``, the connection note ``fcrdns`` (the
confirmed names) and ``fcrdns_result``; a confirmed name also becomes the
connection's ``remote_host`` when the server had none. Loopback clients pass
without lookups; relay clients are not checked.

Arguments (``name value`` pairs):

``reject 0|1|naughty``
    0 (default) only records the result; 1 refuses clients that fail;
    ``naughty`` leaves it to the ``naughty`` plugin. A temporary DNS failure
    is never a permanent refusal.
``reject_type perm|temp|disconnect|temp_disconnect``
    default ``temp``.
``timeout N``
    seconds per lookup (default: the engine's ``dns_timeout``).

config/plugins::

    fcrdns reject naughty reject_type temp
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from qptwisted import DECLINED, DENYSOFT, LOGINFO, HookAnswer, Transaction, arg
from qptwisted.lib.dns import DNSTempError
from qptwisted.lib.policy import PolicyPlugin, reject_argument, reject_type_argument

_FQDN = re.compile(r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.IGNORECASE)


def is_fqdn(name: str) -> bool:
    """True for a fully qualified host name (at least one dot, a letter TLD)."""
    return bool(_FQDN.match(name.rstrip(".")))


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (also IPv4-mapped)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class FCrDNS(PolicyPlugin):
    """Forward-confirmed reverse DNS at connect."""

    name = "fcrdns"
    reject = reject_argument("0")
    reject_type = reject_type_argument("temp")
    lookup_timeout: float | None = arg.duration(None, "seconds per DNS lookup (default: the engine's "
                                                "dns_timeout)", aliases=("timeout",))

    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        ip = connection.remote_ip
        if is_loopback(ip):
            self.log(LOGINFO, "pass, loopback")
            connection.notes["fcrdns_result"] = "pass"
            return DECLINED
        if connection.relay_client:
            self.log(LOGINFO, "skip, relay client")
            return DECLINED
        return self.check(ip).addCallback(self._verdict, transaction)

    def check(self, ip: str) -> Deferred[tuple[str, list[str], str]]:
        """``(result, confirmed names, reason)``; result is ``pass``, ``fail`` or ``temperror``."""
        resolver = self.engine.resolver
        wanted = ipaddress.ip_address(ip)
        if isinstance(wanted, ipaddress.IPv6Address) and wanted.ipv4_mapped is not None:
            wanted = wanted.ipv4_mapped

        def forward(names: list[str]) -> Deferred[Any] | tuple[str, list[str], str]:
            if not names:
                return "fail", [], "no rDNS"
            names = [name for name in names[:10] if is_fqdn(name)]
            if not names:
                return "fail", [], "rDNS is not a FQDN"
            lookups = [resolver.lookup_ip(name, self.lookup_timeout) for name in names]
            gathered: Deferred[Any] = defer.gatherResults(lookups, consumeErrors=True)

            def compare(addresses: list[list[str]]) -> tuple[str, list[str], str]:
                confirmed = [name for name, found in zip(names, addresses, strict=True)
                             if any(ipaddress.ip_address(a) == wanted for a in found)]
                if confirmed:
                    return "pass", confirmed, "fcrdns"
                return "fail", [], f"{', '.join(names)} does not resolve to {ip}"

            return gathered.addCallback(compare)

        def failed(failure: Any) -> tuple[str, list[str], str]:
            if failure.check(defer.FirstError):
                failure = failure.value.subFailure
            failure.trap(DNSTempError)
            return "temperror", [], failure.getErrorMessage()

        return resolver.lookup_ptr(ip, self.lookup_timeout).addCallback(forward).addErrback(failed)

    def _verdict(self, outcome: tuple[str, list[str], str], transaction: Transaction) -> HookAnswer:
        result, names, reason = outcome
        connection = transaction.connection
        connection.notes["fcrdns_result"] = result
        connection.notes["fcrdns"] = names
        comment = f" ({names[0]})" if names else ""
        connection.auth_results.append(f"iprev={result} policy.iprev={connection.remote_ip}{comment}")
        if result == "pass":
            self.log(LOGINFO, f"pass, {', '.join(names)}")
            if not connection.remote_host:
                connection.remote_host = names[0]
            return DECLINED
        if result == "temperror":
            self.log(LOGINFO, f"temperror, {reason}")
            answer = self.get_reject(transaction, "Temporary DNS failure looking up your address")
            return (DENYSOFT, answer[1]) if isinstance(answer, tuple) else answer
        return self.get_reject(transaction, f"Your address {connection.remote_ip} has no valid reverse DNS",
                               reason)
