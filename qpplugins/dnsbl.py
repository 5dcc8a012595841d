"""dnsbl: refuse clients whose IP address is listed in DNS block lists.

The lookups start at ``connect`` for every zone at once and the greeting is
not held up by them; their answers are collected at ``rcpt``, as qpsmtpd
does, so a slow list costs the client nothing until then. Mail to
``postmaster``, ``abuse``, ``mailer-daemon`` and ``root`` is never refused
(RFC 5321 asks that these stay reachable). A list that times out or answers
SERVFAIL counts as "not listed" and is logged. Relay clients, whitelisted
hosts (``whitelisthost`` note, e.g. from ``dns_whitelist_soft``) and addresses
in ``dnsbl_allow`` are not looked up.

``RBLSMTPD`` (djb's rblsmtpd convention, read at connect): unset, nothing
happens; set but empty, the client is whitelisted; otherwise the client is
refused with its text, permanently if it starts with ``-`` (the ``-`` is
dropped), else temporarily.

Arguments (``name value`` pairs):

``reject 1|0|naughty|connect``
    1 (default): refuse at RCPT; ``connect``: wait for the answers at connect
    and refuse there; ``naughty``: leave the refusal to the ``naughty``
    plugin; 0: only log and set the note.
``reject_type perm|temp|disconnect|temp_disconnect``
    default ``perm``. A single bare argument is taken as ``reject_type``
    (qpsmtpd's old syntax).
``timeout N``
    seconds per lookup (default: the engine's ``dns_timeout``).

Config files:

``dnsbl_zones``
    one list per line: ``zone[:A.B.C.D] [message]``. With ``:A.B.C.D`` only
    that answer counts as listed. The message (``%IP%`` and ``%ZONE%`` are
    replaced) is the reply; without one the list's TXT record is used, else
    ``Blocked by <zone>``.
``dnsbl_allow``
    IPs, CIDR networks or octet prefixes (``192.168.``) never looked up.
``dnsbl_rejectmsg``
    text put before every refusal.

The connection note ``dnsbl`` holds the refusal text of a listed client.

config/plugins::

    dnsbl reject 1 reject_type perm timeout 5
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from qptwisted import (
    DECLINED,
    DENY,
    DENYSOFT,
    LOGINFO,
    LOGNOTICE,
    LOGWARN,
    Address,
    Connection,
    HookAnswer,
    Transaction,
    arg,
)
from qptwisted.lib.dns import DNSTempError
from qptwisted.lib.ipmatch import IPMatcher
from qptwisted.lib.policy import PolicyPlugin, reject_argument, reject_type_argument

SPECIAL_RECIPIENTS = frozenset({"postmaster", "abuse", "mailer-daemon", "root"})


@dataclass(frozen=True)
class Zone:
    """One line of ``dnsbl_zones``."""

    zone: str
    match: str | None = None
    message: str | None = None

    @classmethod
    def parse(cls, line: str) -> Zone:
        """``zone[:A.B.C.D] [message]``."""
        head, _, message = line.strip().partition(" ")
        zone, _, match = head.partition(":")
        return cls(zone.strip(".").lower(), match or None, message.strip() or None)


class DNSBL(PolicyPlugin):
    """IP DNS block lists, looked up at connect and enforced at RCPT."""

    name = "dnsbl"
    reject = reject_argument("1", "1: refuse at RCPT; connect: refuse at connect; naughty: leave it to "
                             "the naughty plugin; 0: only log", extra=("connect",))
    reject_type = reject_type_argument("perm", "the code of a refusal; a bare word on the line is this "
                                       "(qpsmtpd's old syntax)", positional=True)
    lookup_timeout: float | None = arg.duration(None, "seconds per DNS lookup (default: the engine's "
                                                "dns_timeout)", aliases=("timeout",))

    def register(self, *args: str) -> None:
        """Read the lists."""
        self.zones = [Zone.parse(line) for line in self.config_list("dnsbl_zones")]
        self.allow = IPMatcher(entry.split()[0].rstrip(".") for entry in self.config_list("dnsbl_allow")
                               if entry.split())
        self.rejectmsg = " ".join(self.config_list("dnsbl_rejectmsg"))

    # -- hooks ---------------------------------------------------------------
    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        rblsmtpd = os.environ.get("RBLSMTPD")
        if rblsmtpd is not None:
            if rblsmtpd == "":
                self.log(LOGINFO, f"skip, RBLSMTPD set but empty: {connection.remote_ip} whitelisted")
                connection.notes["whitelisthost"] = connection.notes.get("whitelisthost") or "RBLSMTPD"
                return DECLINED
            permanent = rblsmtpd.startswith("-")
            message = rblsmtpd[1:] if permanent else rblsmtpd
            self.log(LOGINFO, f"fail, RBLSMTPD={rblsmtpd!r} for {connection.remote_ip}")
            connection.notes["dnsbl"] = message
            if self.reject == "0":
                return DECLINED
            return (DENY if permanent else DENYSOFT), message
        if not self.zones:
            self.log(LOGWARN, "skip, no zones in config/dnsbl_zones")
            return DECLINED
        if self.is_immune(transaction):
            return DECLINED
        if self.allow and self.allow.matches(connection.remote_ip):
            self.log(LOGINFO, f"skip, {connection.remote_ip} is in dnsbl_allow")
            return DECLINED
        pending = self.lookup(connection.remote_ip)
        if self.reject == "connect":
            return pending.addCallback(self._verdict, transaction)
        connection.notes["dnsbl_pending"] = pending
        return DECLINED

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        connection = transaction.connection
        pending: Deferred[str | None] | None = connection.notes.get("dnsbl_pending")
        if pending is None and "dnsbl_result" not in connection.notes:
            return DECLINED
        if (rcpt.user or "").lower() in SPECIAL_RECIPIENTS:
            self.log(LOGINFO, f"skip, special recipient {rcpt.user}")
            return DECLINED
        if "dnsbl_result" in connection.notes:
            return self._verdict(connection.notes["dnsbl_result"], transaction)
        assert pending is not None
        waiting: Deferred[Any] = Deferred()
        pending.addBoth(self._share, waiting)
        return waiting.addCallback(self._verdict, transaction)

    # -- the work --------------------------------------------------------------
    def _share(self, result: Any, waiting: Deferred[Any]) -> Any:
        waiting.callback(result)
        return result

    def lookup(self, ip: str) -> Deferred[str | None]:
        """Query every zone; fires with the refusal text of the first listing zone, or None."""
        resolver = self.engine.resolver
        queries = []
        for zone in self.zones:
            query = resolver.dnsbl_query(ip, zone.zone, self.lookup_timeout)
            queries.append(query.addErrback(self._error, zone.zone))
        both = defer.gatherResults(queries)

        def decide(answers: list[list[str] | None]) -> Deferred[str | None] | str | None:
            for zone, records in zip(self.zones, answers, strict=True):
                if not records or (zone.match and zone.match not in records):
                    continue
                self.log(LOGNOTICE, f"{ip} listed in {zone.zone} ({', '.join(records)})")
                if zone.message:
                    return self._message(zone.message, ip, zone.zone)
                txt = resolver.dnsbl_txt(ip, zone.zone, self.lookup_timeout)
                return txt.addCallbacks(
                    lambda texts, zone=zone: self._message(texts[0] if texts else "", ip, zone.zone),
                    lambda _failure, zone=zone: self._message("", ip, zone.zone))
            self.log(LOGINFO, f"pass, {ip} not listed")
            return None

        return both.addCallback(decide)

    def _message(self, text: str, ip: str, zone: str) -> str:
        text = (text or f"Blocked by {zone}").replace("%IP%", ip).replace("%ZONE%", zone)
        return f"{self.rejectmsg} {text}".strip()

    def _error(self, failure: Any, zone: str) -> None:
        if not failure.check(DNSTempError):
            self.log(LOGWARN, f"{zone}: unexpected {failure.type.__name__}: {failure.getErrorMessage()}")
        self.log(LOGWARN, f"{zone}: {failure.getErrorMessage()}; treated as not listed")
        return None

    def _verdict(self, listed: str | None, transaction: Transaction) -> HookAnswer:
        connection: Connection = transaction.connection
        connection.notes.pop("dnsbl_pending", None)
        connection.notes["dnsbl_result"] = listed
        if listed is None:
            return DECLINED
        connection.notes["dnsbl"] = listed
        return self.get_reject(transaction, listed, "listed")
