"""dns_whitelist_soft: mark clients listed in DNS whitelists (DNSWL) as trusted.

At ``connect`` the client's IP is looked up in every zone of
``whitelist_zones`` (``<reversed ip>.<zone>``). A listed client gets the
connection note ``whitelisthost`` (the zone, or the zone's TXT answer), which
``dnsbl``, ``rhsbl``, ``greylisting`` and the other policy plugins honour
(``is_immune``); at ``rcpt`` the transaction note ``whitelistsender`` is set
as qpsmtpd does. "Soft": nothing is accepted or refused here. List this
plugin before the plugins that should trust it. A zone that times out or
answers SERVFAIL counts as "not listed".

Arguments (``name value`` pairs):

``timeout N``
    seconds per lookup (default: the engine's ``dns_timeout``).

Config files:

``whitelist_zones``
    one zone per line, optionally ``zone:A.B.C.D`` to accept only that answer.

config/plugins::

    dns_whitelist_soft
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from qptwisted import DECLINED, LOGINFO, LOGWARN, Address, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin


class DNSWhitelistSoft(PolicyPlugin):
    """DNS whitelists set the ``whitelisthost`` note."""

    name = "dns_whitelist_soft"
    lookup_timeout: float | None = arg.duration(None, "seconds per DNS lookup (default: the engine's "
                                                "dns_timeout)", aliases=("timeout",))

    def register(self, *args: str) -> None:
        """Read ``whitelist_zones``."""
        self.zones: list[tuple[str, str | None]] = []
        for line in self.config_list("whitelist_zones"):
            zone, _, match = line.split()[0].partition(":")
            self.zones.append((zone.strip(".").lower(), match or None))

    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        if not self.zones:
            self.log(LOGWARN, "skip, no zones in config/whitelist_zones")
            return DECLINED
        connection = transaction.connection
        resolver = self.engine.resolver
        queries = [resolver.dnsbl_query(connection.remote_ip, zone, self.lookup_timeout)
                   .addErrback(self._error, zone) for zone, _ in self.zones]

        def decide(answers: list[list[str] | None]) -> HookAnswer:
            for (zone, match), records in zip(self.zones, answers, strict=True):
                if records and (match is None or match in records):
                    self.log(LOGINFO, f"pass, {connection.remote_ip} listed in {zone}")
                    connection.notes["whitelisthost"] = zone
                    return DECLINED
            self.log(LOGINFO, "not listed")
            return DECLINED

        return defer.gatherResults(queries).addCallback(decide)

    def _error(self, failure: Any, zone: str) -> None:
        self.log(LOGWARN, f"{zone}: {failure.getErrorMessage()}; treated as not listed")
        return None

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        if transaction.connection.notes.get("whitelisthost"):
            transaction.notes["whitelistsender"] = True
        return DECLINED
