"""limit: connection, message and recipient limits, per node or shared by every node through Redis.

Haraka's ``limit`` for qptwisted. Each limit is off unless given; rates are
written ``N/PERIOD`` (``30/1m``, ``500/1h``, ``10000/1d``):

``concurrency N``
    connections at once from one IP address. With Redis this counts the
    connections on every node; a node that dies frees its slots after
    ``concurrency_ttl`` (default 120 s; live connections are refreshed every
    third of it).
``connections RATE``
    new connections from one IP address.
``sender_messages RATE``, ``sender_recipients RATE``
    MAIL and RCPT commands per envelope sender (the null sender ``<>`` of
    bounces is not counted: it is everybody's).
``domain_messages RATE``, ``domain_recipients RATE``
    messages (one per transaction and domain) and RCPT commands per
    recipient domain.
``user_messages RATE``, ``user_recipients RATE``
    MAIL and RCPT commands per authenticated user (AUTH or XCLIENT LOGIN).
``unrecognized N``
    unrecognized commands on one connection (list ``limit`` after the
    plugins that add verbs, such as ``tls`` and ``xclient``).
``errors N``
    refusals (DENY*, DENYSOFT* from any plugin) on one connection; the
    next command after the N-th gets the 421.

Replies: connection limits (``concurrency``, ``connections``,
``unrecognized``, ``errors``) answer ``421 4.7.0`` with what was exceeded
and close the connection; sender, domain and user rates answer ``451
4.7.1`` to MAIL or RCPT with the address and the rate, e.g. ``451 4.7.1
Too many messages from <a@example.org> (101 in 1h), try again later``.

Counting (:mod:`qptwisted.lib.counters`): every attempt counts, refused
ones too, as Postfix's anvil counts; MAIL counts as a message, RCPT as a
recipient. Windows are sliding (two buckets, the older one weighted by its
overlap) unless ``window fixed``. A store that does not answer is logged
and the limit skipped: limits protect capacity, they should not stop mail
when Redis is down.

``db_dir DIR``
    directory of the SQLite store shared by the workers of one node
    (default: the engine's ``spool_dir``).
``redis redis://host:port/db``
    keep the counters in Redis instead, shared by every node.

config/plugins::

    limit concurrency 10 connections 60/1m sender_messages 200/1h domain_recipients 2000/1h redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from qptwisted import (
    DECLINED,
    DONE,
    LOGINFO,
    LOGWARN,
    Address,
    ArgumentError,
    Code,
    HookAnswer,
    Plugin,
    Transaction,
    arg,
)
from qptwisted.core.arguments import Argument, Kind, parse_duration
from qptwisted.lib.counters import open_counters

Rate = tuple[int, float]


def parse_rate(text: str, plugin: Any = None) -> Rate:
    """``N/PERIOD`` (``30/1m``, ``5/h``) to (N, seconds)."""
    count, slash, period = text.partition("/")
    if not slash or not count.isdigit():
        raise ValueError(f"{text!r} is not a rate such as 30/1m or 500/1h")
    period = period.strip()
    seconds = parse_duration(("1" + period) if period[:1].isalpha() else period)
    if seconds <= 0:
        raise ValueError(f"{text!r}: the period must be longer than 0")
    return int(count), seconds


def _rate_argument(help: str) -> Any:  # noqa: A002
    return Argument(Kind("N/PERIOD", parse_rate), None, help)


def _period(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class Limit(Plugin):
    """Connection, message and recipient limits; see the module docstring."""

    name = "limit"
    concurrency: int = arg.int(0, "connections at once from one IP (0: no limit)")
    connections: Rate | None = _rate_argument("new connections per IP, N/PERIOD")
    sender_messages: Rate | None = _rate_argument("MAIL commands per sender, N/PERIOD")
    sender_recipients: Rate | None = _rate_argument("RCPT commands per sender, N/PERIOD")
    domain_messages: Rate | None = _rate_argument("messages per recipient domain, N/PERIOD")
    domain_recipients: Rate | None = _rate_argument("RCPT commands per recipient domain, N/PERIOD")
    user_messages: Rate | None = _rate_argument("MAIL commands per authenticated user, N/PERIOD")
    user_recipients: Rate | None = _rate_argument("RCPT commands per authenticated user, N/PERIOD")
    unrecognized: int = arg.int(0, "unrecognized commands on one connection (0: no limit)")
    errors: int = arg.int(0, "refusals on one connection before it is closed (0: no limit)")
    window: str = arg.choice(("sliding", "fixed"), "sliding", "sliding (weighted buckets) or fixed windows")
    concurrency_ttl: float = arg.duration(120, "seconds a dead node's connections still count")
    db_dir: Path | None = arg.path(None, "directory of the SQLite store (default: spool_dir)", workdir=True)
    redis: str | None = arg.str(None, "keep the counters in Redis instead: redis://host:port/db")

    def register(self, *args: str) -> None:
        """Open the store; refresh this process's connections for the concurrency count."""
        if self.concurrency < 0 or self.unrecognized < 0 or self.errors < 0:
            raise ArgumentError(f"plugin {self.plugin_name}: limits must not be negative")
        self.sliding = self.window == "sliding"
        db_dir = self.db_dir or self.engine.settings.spool_dir
        self.counters = open_counters(self.redis, os.path.join(db_dir, "limit.sqlite"), "limit", self.engine)
        self.node = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        #: this process's counted connections: connection id -> (key, member)
        self.live: dict[int, tuple[str, str]] = {}
        if self.concurrency:
            self.engine.call_every(max(1.0, self.concurrency_ttl / 3), self._refresh)

    def close(self) -> None:
        """Close the store."""
        self.counters.close()

    def _now(self) -> float:
        return float(self.clock.seconds())

    def _refresh(self) -> Deferred[None] | None:
        if not self.live:
            return None
        return self.counters.refresh(list(self.live.values()), self._now(), self.concurrency_ttl)

    def _failed(self, failure: Any, what: str) -> HookAnswer:
        self.log(LOGWARN, f"store failed, {what} not checked: {failure.getErrorMessage()}")
        return DECLINED

    # -- connection limits ------------------------------------------------------------
    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        ip = connection.remote_ip
        checks: list[Deferred[Any]] = []
        now = self._now()
        if self.concurrency:
            self._release(connection.id)  # connect again (XCLIENT): the client changed
            key, member = f"conc:{ip}", f"{self.node}:{connection.id}"
            self.live[connection.id] = (key, member)
            checks.append(self.counters.enter(key, member, now, self.concurrency_ttl).addCallback(
                lambda count: None if count <= self.concurrency else
                f"Too many concurrent connections from {ip} ({count}, at most {self.concurrency})"))
        if self.connections:
            checks.append(self._over(f"conn:{ip}", self.connections, now, f"Too many connections from {ip}"))
        if not checks:
            return DECLINED
        return self._verdict(transaction, checks, 421, "4.7.0", close=True, what="connection limits")

    def hook_disconnect(self, transaction: Transaction) -> HookAnswer:
        release = self._release(transaction.connection.id)
        return DECLINED if release is None else release

    def _release(self, connection_id: int) -> Deferred[Any] | None:
        entry = self.live.pop(connection_id, None)
        if entry is None:
            return None
        return self.counters.leave(*entry).addErrback(self._failed, "concurrency release")

    # -- per-connection counts --------------------------------------------------------
    def hook_deny(self, transaction: Transaction, plugin: str | None, code: Code,
                  message: str | None) -> HookAnswer:
        if self.errors:
            notes = transaction.connection.notes
            notes["limit_errors"] = notes.get("limit_errors", 0) + 1
        return DECLINED

    def _too_many_errors(self, transaction: Transaction) -> bool:
        count = transaction.connection.notes.get("limit_errors", 0)
        if not self.errors or count < self.errors:
            return False
        self._refuse(transaction, 421, "4.7.0", f"Too many errors ({count}), closing connection", close=True)
        return True

    def hook_unrecognized_command(self, transaction: Transaction, verb: str, rest: str) -> HookAnswer:
        if self._too_many_errors(transaction):
            return DONE
        if not self.unrecognized:
            return DECLINED
        notes = transaction.connection.notes
        count = notes["limit_unrecognized"] = notes.get("limit_unrecognized", 0) + 1
        if count >= self.unrecognized:
            self._refuse(transaction, 421, "4.7.0", f"Too many unrecognized commands ({count}), closing "
                         "connection", close=True)
            return DONE
        return DECLINED

    def _errors_hook(self, transaction: Transaction, *args: Any, **params: Any) -> HookAnswer:
        return DONE if self._too_many_errors(transaction) else DECLINED

    hook_helo = hook_ehlo = hook_data = hook_vrfy = hook_noop = _errors_hook

    # -- sender, domain and user rates --------------------------------------------------
    def hook_mail(self, transaction: Transaction, sender: Address, **params: Any) -> HookAnswer:
        if self._too_many_errors(transaction):
            return DONE
        now = self._now()
        checks: list[Deferred[Any]] = []
        if self.sender_messages and not sender.is_null:
            checks.append(self._over(f"smsg:{sender.canonical.lower()}", self.sender_messages, now,
                                     f"Too many messages from <{sender.canonical}>"))
        user = transaction.connection.auth_user
        if self.user_messages and user:
            checks.append(self._over(f"umsg:{user.lower()}", self.user_messages, now,
                                     f"Too many messages from user {user}"))
        if not checks:
            return DECLINED
        return self._verdict(transaction, checks, 451, "4.7.1", what="message rates")

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        if self._too_many_errors(transaction):
            return DONE
        now = self._now()
        checks: list[Deferred[Any]] = []
        sender = transaction.sender
        if self.sender_recipients and sender is not None and not sender.is_null:
            checks.append(self._over(f"srcpt:{sender.canonical.lower()}", self.sender_recipients, now,
                                     f"Too many recipients from <{sender.canonical}>"))
        domain = (rcpt.host or "").lower()
        if self.domain_recipients and domain:
            checks.append(self._over(f"drcpt:{domain}", self.domain_recipients, now,
                                     f"Too many recipients for {domain}"))
        seen = transaction.notes.setdefault("limit_domains", set())
        if self.domain_messages and domain and domain not in seen:
            seen.add(domain)
            checks.append(self._over(f"dmsg:{domain}", self.domain_messages, now,
                                     f"Too many messages for {domain}"))
        user = transaction.connection.auth_user
        if self.user_recipients and user:
            checks.append(self._over(f"urcpt:{user.lower()}", self.user_recipients, now,
                                     f"Too many recipients from user {user}"))
        if not checks:
            return DECLINED
        return self._verdict(transaction, checks, 451, "4.7.1", what="recipient rates")

    # -- helpers -------------------------------------------------------------------------
    def _over(self, key: str, rate: Rate, now: float, text: str) -> Deferred[str | None]:
        """Count one more for ``key``; the refusal text if that is over ``rate``."""
        limit, seconds = rate

        def judge(count: float) -> str | None:
            if count <= limit:
                return None
            return f"{text} ({int(count)} in {_period(seconds)}, at most {limit})"

        return self.counters.hit(key, seconds, now, 1, self.sliding).addCallback(judge)

    def _verdict(self, transaction: Transaction, checks: Iterable[Deferred[Any]], code: int,
                 enhanced: str, what: str, close: bool = False) -> Deferred[Any]:
        def decide(results: list[tuple[bool, Any]]) -> HookAnswer:
            refusals = []
            for success, value in results:
                if not success:
                    self._failed(value, what)
                elif value:
                    refusals.append(value)
            if not refusals:
                return DECLINED
            self._refuse(transaction, code, enhanced, refusals[0] + ", try again later", close)
            return DONE

        return DeferredList(list(checks), consumeErrors=True).addCallback(decide)

    def _refuse(self, transaction: Transaction, code: int, enhanced: str, text: str, close: bool) -> None:
        connection = transaction.connection
        self.log(LOGINFO, f"{connection.remote_ip}: {code} {text}")
        connection.notes["rejected"] = True
        connection.respond(code, text, enhanced)
        if close:
            connection.disconnect()
