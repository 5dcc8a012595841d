"""noop_counter: disconnect clients that send too many NOOPs in a row.

Any other command resets the count. At ``max`` consecutive NOOPs (default
3) the client gets ``500 Stop wasting my time, too many consecutive NOOPs``
and is disconnected. The count lives in the connection note
``noop_count``.

Argument: ``max N`` (a bare number works too, as in qpsmtpd).

config/plugins::

    noop_counter max 3
"""

from __future__ import annotations

from typing import Any

from qptwisted import DECLINED, DENY_DISCONNECT, LOGINFO, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin

RESET_ON = ("helo", "ehlo", "mail", "rcpt", "data", "vrfy", "help", "unrecognized_command",
            "reset_transaction")


class NoopCounter(PolicyPlugin):
    """Count consecutive NOOPs."""

    name = "noop_counter"
    max: int = arg.int(3, "consecutive NOOPs before the client is disconnected", positional=True)

    def register(self, *args: str) -> None:
        """Hook every other command to reset the count."""
        for hook in RESET_ON:
            self.register_hook(hook, self.reset)

    def reset(self, transaction: Transaction, *args: Any, **kwargs: Any) -> HookAnswer:
        """Another command: start counting again."""
        transaction.connection.notes["noop_count"] = 0
        return DECLINED

    def hook_noop(self, transaction: Transaction) -> HookAnswer:
        notes = transaction.connection.notes
        count = notes["noop_count"] = notes.get("noop_count", 0) + 1
        if count >= self.max:
            self.log(LOGINFO, f"fail, {count} consecutive NOOPs")
            return DENY_DISCONNECT, "Stop wasting my time, too many consecutive NOOPs"
        return DECLINED
