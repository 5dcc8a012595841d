"""connection_time: log how long each connection lasted.

Notes the time at ``pre-connection`` and logs ``X.XXX s.`` with the client's
IP at ``post-connection``, on the engine's clock.

Argument: ``loglevel N`` (default ``LOGINFO``, 6).

config/plugins::

    connection_time loglevel 5
"""

from __future__ import annotations

from typing import Any

from qptwisted import DECLINED, LOGINFO, HookAnswer, Transaction
from qptwisted.lib.policy import PolicyPlugin


class ConnectionTime(PolicyPlugin):
    """Log the duration of every connection."""

    name = "connection_time"

    def hook_pre_connection(self, transaction: Transaction, **kwargs: Any) -> HookAnswer:
        transaction.connection.notes["connection_start"] = self.clock.seconds()
        return DECLINED

    def hook_post_connection(self, transaction: Transaction) -> HookAnswer:
        notes = transaction.connection.notes
        start = notes.get("connection_start")
        if start is not None:
            elapsed = self.clock.seconds() - start
            notes["connection_time"] = elapsed
            self.log(LOGINFO, f"{elapsed:.3f} s. from {transaction.connection.remote_ip}")
        return DECLINED
