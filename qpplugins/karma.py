"""karma: remember how each client IP behaved, and keep the worst ones out for a while.

Every connection collects karma in the connection note ``karma``: plugins
add to it with ``adjust_karma`` (:class:`qptwisted.lib.policy.Policy`), this
plugin takes one point for every refusal the client earns (``deny`` hook)
and for being marked naughty, and gives one for every message accepted
(``queue_post``). When the connection ends its score is added to the IP's
history (``naughty`` and ``nice`` counters, number of connections). An IP
whose history (nice - naughty) falls to ``-strikes`` or below goes into the
penalty box: for ``penalty_days`` its connections are refused at
``connect``. Known good clients (history above ``strikes``) get the
connection note ``karma_history`` for other plugins to trust them.

Time comes from the engine's clock; history lives in SQLite (default) or in
Redis (shared by several servers).

Arguments (``name value`` pairs):

``negative N``
    a connection with karma <= -N is naughty (default 1).
``strikes N``
    history at or below -N puts the IP into the penalty box (default 3).
``penalty_days D``
    how long the penalty box lasts (default 1; fractions allowed).
``reject 1|0|naughty``
    refuse penalty-box clients at connect (default 1), only log (0), or
    leave it to the ``naughty`` plugin.
``reject_type perm|temp|disconnect|temp_disconnect``
    default ``disconnect``.
``db_dir DIR``
    directory of the SQLite store (default: the engine's ``spool_dir``; a
    relative path is taken in the directory the server was started in). Expired
    entries are pruned every hour.
``redis redis://host:port/db``
    keep the history in Redis (which expires it by itself).

config/plugins::

    karma penalty_days 1 strikes 3 reject 1 reject_type disconnect
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from qptwisted import DECLINED, LOGINFO, LOGWARN, Code, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin, reject_type_argument
from qptwisted.lib.reputation import KARMA_TTL, History
from qptwisted.lib.store import open_store


class Karma(PolicyPlugin):
    """Per-IP reputation with a penalty box."""

    name = "karma"
    negative: int = arg.int(1, "a connection with karma <= -N is naughty")
    strikes: int = arg.int(3, "history at or below -N puts the IP into the penalty box")
    penalty_days: float = arg.float(1, "how long the penalty box lasts, in days")
    db_dir: Path | None = arg.path(None, "directory of the SQLite store (default: spool_dir)", workdir=True)
    redis: str | None = arg.str(None, "keep the history in Redis instead: redis://host:port/db")
    reject_type = reject_type_argument("disconnect")

    def register(self, *args: str) -> None:
        """Open the store."""
        self.penalty = self.penalty_days * 86400
        db_dir = self.db_dir or self.engine.settings.spool_dir
        self.store = open_store(self.redis, os.path.join(db_dir, "karma.sqlite"), "karma", self.engine)

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def now(self) -> float:
        """The engine clock's time."""
        return float(self.clock.seconds())

    def history(self, ip: str) -> Deferred[History]:
        """The stored history of ``ip``."""
        return self.store.get(ip, self.now()).addCallback(History)

    # -- hooks ---------------------------------------------------------------
    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        connection.notes.setdefault("karma", 0)

        def check(history: History) -> HookAnswer:
            connection.notes["karma_history"] = history.score
            remaining = history.penalty_start + self.penalty - self.now()
            if history.penalty_start and remaining > 0:
                days = remaining / 86400
                self.log(LOGINFO, f"fail, {connection.remote_ip} is in the penalty box ({days:.2f} days)")
                connection.notes["karma_penalty_box"] = True
                return self.get_reject(transaction, f"You were naughty. You cannot connect for {days:.2f} "
                                       "more days.", "penalty box")
            self.log(LOGINFO, f"pass, history {history.score}")
            return DECLINED

        def failed(failure: Any) -> HookAnswer:
            self.log(LOGWARN, f"store failed: {failure.getErrorMessage()}")
            return DECLINED

        return self.history(connection.remote_ip).addCallbacks(check, failed)

    def hook_deny(self, transaction: Transaction, plugin: str | None, code: Code,
                  message: str | None) -> HookAnswer:
        if plugin != self.plugin_name:
            self.adjust_karma(transaction, -1)
        return DECLINED

    def hook_queue_post(self, transaction: Transaction) -> HookAnswer:
        self.adjust_karma(transaction, 1)
        return DECLINED

    def hook_disconnect(self, transaction: Transaction) -> HookAnswer:
        return self.record(transaction)

    def record(self, transaction: Transaction) -> Deferred[Any]:
        """Add this connection's karma to the IP's history (and maybe open the penalty box)."""
        connection = transaction.connection
        karma = int(connection.notes.get("karma", 0))
        if connection.notes.get("naughty") and not connection.notes.get("karma_counted_naughty"):
            connection.notes["karma_counted_naughty"] = True
            karma -= 1
        ip = connection.remote_ip
        now = self.now()

        def update(history: History) -> Deferred[Any]:
            history.connects += 1
            if karma <= -self.negative:
                history.naughty += 1
                if history.score <= -self.strikes and not connection.notes.get("karma_penalty_box"):
                    history.penalty_start = now
                    self.log(LOGINFO, f"{ip} goes into the penalty box (history {history.score})")
            elif karma > 0:
                history.nice += 1
            return self.store.put(ip, str(history), now, KARMA_TTL).addCallback(lambda _: DECLINED)

        def failed(failure: Any) -> HookAnswer:
            self.log(LOGWARN, f"store failed: {failure.getErrorMessage()}")
            return DECLINED

        return self.store.get(ip, now).addCallback(History).addCallback(update).addErrback(failed)
