"""rhsbl: refuse senders whose domain is listed in right-hand-side block lists.

At ``mail`` the sender's domain (and, with ``check_helo 1``, the HELO name)
is looked up as ``<domain>.<zone>`` in every zone at once. A listed domain
is refused with the zone's message, its TXT record, or ``Mail from <domain>
rejected because it is listed in <zone>``. The null sender, relay clients and
whitelisted hosts/senders are not checked; a zone that times out or answers
SERVFAIL counts as "not listed" (logged).

Arguments (``name value`` pairs):

``reject 1|0|naughty``
    refuse now (default), only log, or leave it to the ``naughty`` plugin.
``reject_type perm|temp|disconnect|temp_disconnect``
    default ``perm``.
``check_helo 0|1``
    also look up the HELO/EHLO name (default 0).
``timeout N``
    seconds per lookup (default: the engine's ``dns_timeout``).

Config files:

``rhsbl_zones``
    one zone per line, optionally followed by the refusal message
    (``%DOMAIN%`` and ``%ZONE%`` are replaced).

The transaction note ``rhsbl`` holds the refusal text of a listed sender.

config/plugins::

    rhsbl reject 1 reject_type perm
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from qptwisted import DECLINED, LOGINFO, LOGNOTICE, LOGWARN, Address, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin, reject_type_argument


class RHSBL(PolicyPlugin):
    """Sender-domain block lists, checked at MAIL."""

    name = "rhsbl"
    reject_type = reject_type_argument("perm")
    check_helo: bool = arg.bool(False, "also look up the HELO/EHLO name")
    lookup_timeout: float | None = arg.duration(None, "seconds per DNS lookup (default: the engine's "
                                                "dns_timeout)", aliases=("timeout",))

    def register(self, *args: str) -> None:
        """Read ``rhsbl_zones``."""
        self.zones: list[tuple[str, str | None]] = []
        for line in self.config_list("rhsbl_zones"):
            zone, _, message = line.partition(" ")
            self.zones.append((zone.strip(".").lower(), message.strip() or None))

    def hook_mail(self, transaction: Transaction, sender: Address, **params: Any) -> HookAnswer:
        if not self.zones:
            self.log(LOGWARN, "skip, no zones in config/rhsbl_zones")
            return DECLINED
        if sender.is_null or not sender.host or sender.host.startswith("["):
            self.log(LOGINFO, "skip, null sender or address literal")
            return DECLINED
        if self.is_immune(transaction):
            return DECLINED
        domains = [sender.host.lower()]
        helo = transaction.connection.hello_host
        if self.check_helo and helo and helo.lower() not in domains \
                and not helo.startswith("["):
            domains.append(helo.lower())
        return self.lookup(domains).addCallback(self._verdict, transaction)

    def lookup(self, domains: list[str]) -> Deferred[str | None]:
        """The refusal text for the first listed ``(domain, zone)``, or None."""
        resolver = self.engine.resolver
        pairs = [(domain, zone, message) for domain in domains for zone, message in self.zones]
        queries = [resolver.rhsbl_query(domain, zone, self.lookup_timeout).addErrback(self._error, zone)
                   for domain, zone, _ in pairs]

        def decide(answers: list[list[str] | None]) -> Any:
            for (domain, zone, message), records in zip(pairs, answers, strict=True):
                if not records:
                    continue
                self.log(LOGNOTICE, f"{domain} listed in {zone} ({', '.join(records)})")
                if message:
                    return message.replace("%DOMAIN%", domain).replace("%ZONE%", zone)
                default = f"Mail from {domain} rejected because it is listed in {zone}"
                txt = resolver.lookup_txt(f"{domain}.{zone}", self.lookup_timeout)
                return txt.addCallbacks(lambda texts, default=default: texts[0] if texts else default,
                                        lambda _failure, default=default: default)
            return None

        return defer.gatherResults(queries).addCallback(decide)

    def _error(self, failure: Any, zone: str) -> None:
        self.log(LOGWARN, f"{zone}: {failure.getErrorMessage()}; treated as not listed")
        return None

    def _verdict(self, listed: str | None, transaction: Transaction) -> HookAnswer:
        if listed is None:
            self.log(LOGINFO, "pass")
            return DECLINED
        transaction.notes["rhsbl"] = listed
        return self.get_reject(transaction, listed, "listed")
