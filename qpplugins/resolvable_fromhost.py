"""resolvable_fromhost: the sender's domain must be able to receive mail.

At ``mail`` the sender's domain needs an MX whose hosts resolve, or (no MX)
an A/AAAA record of its own (RFC 5321 5.1), to addresses outside the
networks of ``invalid_resolvable_fromhost``. A null MX (RFC 7505, ``MX 0 .``)
fails. A temporary DNS failure is always a temporary refusal (when
refusing at all). The null sender, relay clients and whitelisted senders are
not checked. The transaction note ``resolvable_fromhost`` holds the outcome
(``pass``, ``fail``, ``temperror``) and the reason.

Arguments (``name value`` pairs):

``reject 1|0|naughty``
    refuse (default), only log, or leave it to the ``naughty`` plugin.
``reject_type perm|temp|disconnect|temp_disconnect``
    default ``temp`` (qpsmtpd's default: a domain can be fixed).
``timeout N``
    seconds per lookup (default: the engine's ``dns_timeout``).

Config files:

``invalid_resolvable_fromhost``
    networks (CIDR, one per line) that do not count as a valid address.
    Default: this-network, loopback, link-local, RFC 1918, multicast,
    reserved, and their IPv6 counterparts.

config/plugins::

    resolvable_fromhost reject 1 reject_type temp
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from qptwisted import DECLINED, DENYSOFT, LOGINFO, Address, HookAnswer, Transaction, arg
from qptwisted.lib.dns import DNSTempError
from qptwisted.lib.ipmatch import IPMatcher
from qptwisted.lib.policy import PolicyPlugin, reject_type_argument

DEFAULT_INVALID = (
    "0.0.0.0/8", "10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
    "224.0.0.0/4", "240.0.0.0/4", "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
)


class ResolvableFromhost(PolicyPlugin):
    """The envelope sender's domain must resolve to somewhere mail can go."""

    name = "resolvable_fromhost"
    reject_type = reject_type_argument("temp")
    lookup_timeout: float | None = arg.duration(None, "seconds per DNS lookup (default: the engine's "
                                                "dns_timeout)", aliases=("timeout",))

    def register(self, *args: str) -> None:
        """Read the invalid networks."""
        self.invalid = IPMatcher(self.config_list("invalid_resolvable_fromhost") or DEFAULT_INVALID)

    def hook_mail(self, transaction: Transaction, sender: Address, **params: Any) -> HookAnswer:
        if sender.is_null:
            self.log(LOGINFO, "skip, null sender")
            return DECLINED
        if self.is_immune(transaction):
            return DECLINED
        host = sender.host
        if host.startswith("["):
            return self._verdict(("fail", "address literal"), transaction, host)
        return self.check(host.lower()).addCallback(self._verdict, transaction, host)

    def check(self, domain: str) -> Deferred[tuple[str, str]]:
        """``(outcome, reason)`` for ``domain``; outcome is ``pass``, ``fail`` or ``temperror``."""
        resolver = self.engine.resolver

        def valid(addresses: list[str]) -> list[str]:
            return [a for a in addresses if not self.invalid.matches(a)]

        def hosts(exchanges: list[tuple[int, str]]) -> Deferred[Any] | tuple[str, str]:
            if not exchanges:
                return resolver.lookup_ip(domain, self.lookup_timeout).addCallback(
                    lambda found: ("pass", "A") if valid(found) else
                    ("fail", f"{domain} has no MX and no valid A/AAAA"))
            names = [name.rstrip(".") for _, name in exchanges]
            if names == [""]:
                return "fail", f"{domain} has a null MX (RFC 7505)"
            lookups = [resolver.lookup_ip(name, self.lookup_timeout) for name in names if name]
            return defer.gatherResults(lookups, consumeErrors=True).addCallback(
                lambda found: ("pass", "MX") if any(valid(f) for f in found) else
                ("fail", f"no MX host of {domain} has a valid address"))

        def failed(failure: Any) -> tuple[str, str]:
            if failure.check(defer.FirstError):
                failure = failure.value.subFailure
            failure.trap(DNSTempError)
            return "temperror", failure.getErrorMessage()

        return resolver.lookup_mx(domain, self.lookup_timeout).addCallback(hosts).addErrback(failed)

    def _verdict(self, outcome: tuple[str, str], transaction: Transaction, host: str) -> HookAnswer:
        result, reason = outcome
        transaction.notes["resolvable_fromhost"] = f"{result}: {reason}"
        if result == "pass":
            self.log(LOGINFO, f"pass, {reason}")
            return DECLINED
        if result == "temperror":
            answer = self.get_reject(transaction, f"Temporary failure looking up {host}, try again later",
                                     reason)
            return (DENYSOFT, answer[1]) if isinstance(answer, tuple) else answer
        return self.get_reject(transaction, f"Sender domain {host} does not resolve to a mail host",
                               reason)
