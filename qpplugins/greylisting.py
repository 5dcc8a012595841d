"""greylisting: temporarily refuse unknown (client, sender, recipient) triplets.

qpsmtpd's logic: the first time a triplet is seen it is refused with a
temporary error and remembered. A retry within ``black_timeout`` is still
refused ("too early"); a retry after that but within ``grey_timeout`` is
accepted and the triplet becomes white for ``white_timeout`` (renewed on
every use). A grey entry not retried in time is forgotten. Time comes from
the engine's clock, so tests inject it.

Which parts form the key: ``remote_ip`` (default 1), ``sender`` (0),
``recipient`` (0). With ``recipient`` or ``per_recipient`` the check runs at
``rcpt`` for each recipient; otherwise at ``mail`` (or, with ``deny_late``,
the refusal waits until ``data``). Not greylisted: relay clients,
authenticated users, whitelisted hosts/senders, clients matched by
``greylist_exclude_files``, clients whitelisted in the store with
``qpsmtpd greylist whitelist IP``, and clients outside the ``p0f`` /
``geoip`` selections when those are given. ``qpsmtpd greylist list`` shows
the triplets.

Arguments (``name value`` pairs):

``remote_ip 1``, ``sender 0``, ``recipient 0``, ``per_recipient 0``
    the key, as above.
``black_timeout N`` (default 3000 s), ``grey_timeout N`` (default 12000 s),
``white_timeout N`` (default 3110400 s = 36 days)
    the windows, in seconds (``5m``, ``2h``, ``36d`` work too).
``deny_late 0|1``
    refuse at DATA instead of MAIL (key without recipient only).
``reject 1|0``
    0 logs what would happen and never refuses (test mode).
``db_dir DIR``
    directory of the SQLite store (default: the engine's ``spool_dir``; a
    relative path is taken in the directory the server was started in). Expired
    triplets are pruned every hour.
``redis redis://host:port/db``
    keep the triplets in Redis instead, shared by several servers (Redis
    expires them by itself).
``p0f genre,Windows``
    greylist only clients whose ``p0f`` note has that value (e.g. from ``ident/p0f``).
``geoip US,CN``
    greylist only clients whose ``geoip_country`` note is in the list.
``mode``
    qpsmtpd's old switch: ``testonly`` and ``off`` mean ``reject 0``.

Config files:

``greylisting`` (per policy group)
    ``0`` turns greylisting off for the recipients of a policy group when it
    is in ``config/groups/<group>/greylisting`` (see ``docs/esmtp.md``); a
    ``config/greylisting`` with ``0`` turns it off for everyone else. When
    policy groups are in use the check without the recipient in the key runs
    at the first RCPT instead of MAIL, because the group is only known then.
``greylist_exclude_files``
    names of files (relative to the config directory) in postgrey's
    ``whitelist_clients`` format: IP addresses, CIDR networks, host name
    suffixes (``example.org`` matches ``mx.example.org``), or ``/regex/``
    on the client's host name.
``denysoft_greylist``
    qpsmtpd's parameter file: its ``name value`` lines (``black_timeout 300``)
    are parameters the ``config/plugins`` line overrides; any other line is
    the refusal text (default "This mail is temporarily denied").

config/plugins::

    greylisting remote_ip 1 sender 1 recipient 1 black_timeout 300 redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from qptwisted import (
    DECLINED,
    DENYSOFT,
    LOGINFO,
    LOGWARN,
    Address,
    Argument,
    ArgumentError,
    HookAnswer,
    Transaction,
    arg,
    parse_bool,
)
from qptwisted.lib.ipmatch import IPMatcher
from qptwisted.lib.policy import PolicyPlugin
from qptwisted.lib.reputation import CLIENT_PREFIX, GreyRecord
from qptwisted.lib.store import open_store

DEFAULT_MESSAGE = "This mail is temporarily denied"


class ExcludeList:
    """Postgrey-style client whitelist: IPs, networks, host suffixes, /regex/."""

    def __init__(self, lines: list[str]) -> None:
        ips: list[str] = []
        self.suffixes: list[str] = []
        self.patterns: list[re.Pattern[str]] = []
        for line in lines:
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            if len(entry) > 1 and entry.startswith("/") and entry.endswith("/"):
                self.patterns.append(re.compile(entry[1:-1], re.IGNORECASE))
                continue
            try:
                IPMatcher([entry])
                ips.append(entry)
            except ValueError:
                self.suffixes.append(entry.lower().lstrip("."))
        self.ips = IPMatcher(ips)

    def matches(self, ip: str, host: str | None) -> bool:
        """True if the client is excluded from greylisting."""
        if self.ips and self.ips.matches(ip):
            return True
        if not host:
            return False
        host = host.lower().rstrip(".")
        if any(host == suffix or host.endswith("." + suffix) for suffix in self.suffixes):
            return True
        return any(pattern.search(host) for pattern in self.patterns)


class Greylisting(PolicyPlugin):
    """Triplet greylisting with an SQLite or Redis store."""

    name = "greylisting"
    remote_ip: bool = arg.bool(True, "the client's IP is part of the key")
    sender: bool = arg.bool(False, "the envelope sender is part of the key")
    recipient: bool = arg.bool(False, "each recipient is part of the key (checked at RCPT)")
    per_recipient: bool = arg.bool(False, "the same as recipient")
    deny_late: bool = arg.bool(False, "refuse at DATA instead of MAIL (key without recipient only)")
    black_timeout: float = arg.duration(50 * 60, "a retry before this is still refused")
    grey_timeout: float = arg.duration(3 * 3600 + 20 * 60, "a retry after this counts as a new first try")
    white_timeout: float = arg.duration(36 * 24 * 3600, "how long an accepted triplet stays white")
    db_dir: Path | None = arg.path(None, "directory of the SQLite store (default: spool_dir)", workdir=True)
    redis: str | None = arg.str(None, "keep the triplets in Redis instead: redis://host:port/db")
    p0f: list[str] = arg.list([], "greylist only clients whose p0f note has one of these values")
    geoip: list[str] = arg.list([], "greylist only clients from these countries (geoip_country note)")
    mode: str | None = arg.str(None, "qpsmtpd's old switch: testonly or off is reject 0")

    def configure(self, words: Sequence[str] | None = None) -> None:
        """qpsmtpd's ``config/denysoft_greylist``: its ``name value`` lines are parameters the line overrides.

        Its other lines are the refusal text.
        """
        words = list(self.args if words is None else words)
        given = _named(words)
        self.texts: list[str] = []
        for line in self.config_list("denysoft_greylist"):
            name, _, value = line.partition(" ")
            key = name.lower().replace("-", "_")
            if not isinstance(getattr(type(self), key, None), Argument) or not value.strip():
                self.texts.append(line)
            elif key not in given:
                words += [key, value.strip()]
                given.add(key)
        if str(self.mode_of(words)).lower() in ("testonly", "off") and "reject" not in given:
            words += ["reject", "0"]
        super().configure(words)

    @staticmethod
    def mode_of(words: Sequence[str]) -> str | None:
        """The value of a ``mode`` word pair, if any."""
        for index, word in enumerate(words[:-1]):
            if word.lower() == "mode":
                return words[index + 1]
        return None

    def register(self, *args: str) -> None:
        """Open the store, read the exclude files."""
        self.use_ip, self.use_sender = self.remote_ip, self.sender
        self.use_recipient = self.recipient or self.per_recipient
        self.black, self.grey, self.white = self.black_timeout, self.grey_timeout, self.white_timeout
        if not self.black <= self.grey:
            raise ArgumentError(f"plugin {self.plugin_name}: argument black_timeout: must not exceed "
                                "grey_timeout")
        lines: list[str] = []
        for name in self.config_list("greylist_exclude_files"):
            lines += self.engine.config.get_list(name)
        self.exclude = ExcludeList(lines)
        self.countries = [country.upper() for country in self.geoip]
        self.systems = [system.lower() for system in self.p0f]
        self.message = " ".join(self.texts) or DEFAULT_MESSAGE
        db_dir = self.db_dir or self.engine.settings.spool_dir
        self.store = open_store(self.redis, os.path.join(db_dir, "greylisting.sqlite"), "greylist",
                                self.engine)

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    # -- hooks ---------------------------------------------------------------
    def hook_mail(self, transaction: Transaction, sender: Address, **params: Any) -> HookAnswer:
        if self.use_recipient or self.policy_groups or self.exempt(transaction):
            return DECLINED
        if not self.enabled(transaction, None):
            return DECLINED
        return self.sender_check(transaction, sender)

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        if not self.use_recipient and not self.policy_groups:
            return DECLINED
        if self.exempt(transaction) or not self.enabled(transaction, rcpt):
            return DECLINED
        assert transaction.sender is not None
        if self.use_recipient:
            return self.greylist(transaction, transaction.sender, rcpt)
        # policy groups: the check without recipient waits for the first recipient (its group decides),
        # and is made once per transaction and group
        decided: dict[str | None, Any] = transaction.notes.setdefault("greylisting_groups", {})
        if rcpt.policy_group in decided:
            return decided[rcpt.policy_group]
        check = self.sender_check(transaction, transaction.sender)
        return check.addCallback(self._decided, decided, rcpt.policy_group)

    def hook_data(self, transaction: Transaction) -> HookAnswer:
        late = transaction.notes.pop("greylisting_denied", None)
        return (DENYSOFT, late) if late else DECLINED

    # -- the logic -------------------------------------------------------------
    def enabled(self, transaction: Transaction, rcpt: Address | None) -> bool:
        """False when config ``greylisting`` of the policy group (or the global one) says 0."""
        value = self.group_config(transaction, "greylisting", rcpt=rcpt)
        if value is None:
            return True
        try:
            on = parse_bool(value)
        except ValueError:
            self.log(LOGWARN, f"config greylisting: {value!r} is not 0 or 1; greylisting")
            return True
        if not on:
            group = rcpt.policy_group if rcpt is not None else transaction.policy_group
            self.log(LOGINFO, f"skip, off for policy group {group}")
        return on

    def sender_check(self, transaction: Transaction, sender: Address) -> Deferred[Any]:
        """The check of a key without recipient; with ``deny_late`` the refusal waits for DATA."""
        check = self.greylist(transaction, sender, None)
        if not self.deny_late:
            return check
        return check.addCallback(self._remember, transaction)

    @staticmethod
    def _decided(answer: Any, decided: dict[str | None, Any], group: str | None) -> Any:
        decided[group] = answer
        return answer

    def _remember(self, answer: Any, transaction: Transaction) -> HookAnswer:
        if isinstance(answer, tuple) and answer[0] == DENYSOFT:
            transaction.notes["greylisting_denied"] = answer[1]
        return DECLINED

    def exempt(self, transaction: Transaction) -> bool:
        """True for clients that are never greylisted."""
        connection = transaction.connection
        if connection.auth_user or self.is_immune(transaction):
            return True
        if self.exclude.matches(connection.remote_ip, connection.remote_host):
            self.log(LOGINFO, "skip, in greylist_exclude_files")
            return True
        if self.systems:
            p0f = connection.notes.get("p0f")
            values = {str(v).lower() for v in (p0f.values() if isinstance(p0f, dict) else [p0f]) if v}
            if not any(any(wanted in value for value in values) for wanted in self.systems):
                self.log(LOGINFO, "skip, p0f does not match")
                return True
        if self.countries and str(connection.notes.get("geoip_country", "")).upper() not in self.countries:
            self.log(LOGINFO, "skip, country not selected")
            return True
        return False

    def key(self, transaction: Transaction, sender: Address, rcpt: Address | None) -> str:
        """The store key of a triplet (hashed: addresses may be long or odd)."""
        parts = []
        if self.use_ip:
            parts.append(transaction.connection.remote_ip)
        if self.use_sender:
            parts.append(sender.canonical.lower())
        if rcpt is not None:
            parts.append(rcpt.canonical.lower())
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]

    def label(self, transaction: Transaction, sender: Address, rcpt: Address | None) -> str:
        """What the key was made of, kept beside the counts for ``qpsmtpd greylist list``."""
        parts = [transaction.connection.remote_ip if self.use_ip else "*",
                 f"<{sender.canonical.lower()}>" if self.use_sender else "*"]
        parts.append(f"<{rcpt.canonical.lower()}>" if rcpt is not None else "*")
        return " ".join(parts)

    def greylist(self, transaction: Transaction, sender: Address, rcpt: Address | None) -> Deferred[Any]:
        """Look the triplet up, update it, and answer DECLINED or DENYSOFT."""
        key = self.key(transaction, sender, rcpt)
        label = self.label(transaction, sender, rcpt)
        now = float(self.clock.seconds())

        def decide(value: str | None) -> Deferred[Any]:
            if value is not None:
                record = GreyRecord.parse(value)
                first, black, white = record.first, record.blocked, record.passed
                if white:
                    return self._store(key, GreyRecord(now, black, white + 1, label), now, self.white,
                                       "pass, white", DECLINED)
                if now < first + self.black:
                    retry = GreyRecord(first, black + 1, 0, label)
                    return self._store(key, retry, now, first + self.grey - now, "fail, retry too early",
                                       (DENYSOFT, self.message))
                if now < first + self.grey:
                    return self._store(key, GreyRecord(now, black, 1, label), now, self.white,
                                       "pass, retry after delay", DECLINED)
            return self._store(key, GreyRecord(now, 1, 0, label), now, self.grey, "fail, first time seen",
                               (DENYSOFT, self.message))

        def client(whitelisted: str | None) -> Any:
            if whitelisted is not None:
                self.log(LOGINFO, "pass, client whitelisted with qpsmtpd greylist whitelist")
                return DECLINED
            return self.store.get(key, now).addCallback(decide)

        def broken(failure: Any) -> HookAnswer:
            self.log(LOGWARN, f"store failed, not greylisting: {failure.getErrorMessage()}")
            return DECLINED

        ip = transaction.connection.remote_ip
        return self.store.get(CLIENT_PREFIX + ip, now).addCallback(client).addErrback(broken)

    def _store(self, key: str, record: GreyRecord, now: float, ttl: float, log: str,
               answer: Any) -> Deferred[Any]:
        self.log(LOGINFO, log)
        if answer is not DECLINED and self.reject == "0":
            self.log(LOGINFO, "reject 0: not refusing")
            answer = DECLINED
        return self.store.put(key, str(record), now, ttl).addCallback(lambda _: answer)


def _named(words: Sequence[str]) -> set[str]:
    """The argument names a greylisting line gives (``name value`` pairs or ``name=value``)."""
    names: set[str] = set()
    index = 0
    while index < len(words):
        key, equals, _ = words[index].partition("=")
        names.add(key.lower().replace("-", "_"))
        index += 1 if equals else 2
    return names
