"""tarpit: answer suspicious clients slowly (Haraka's ``tarpit``).

Spam engines give up on slow servers; real MTAs wait. For a client that is
suspicious, every reply is delayed by ``delay`` seconds on the engine's
clock (nothing blocks, other connections are unaffected). A client is
suspicious when a plugin set the connection note ``tarpit`` (a number of
seconds, or true for ``delay``), when it is naughty or an early talker, or
when its ``karma`` note is negative. Relay clients and whitelisted hosts are
never delayed.

Arguments: ``delay S`` (default 5), ``max S`` (cap on a note's own value,
default 60), ``hooks H,H`` (default: every command's hook after connect).
List ``tarpit`` after the plugins that mark clients.

Not in qpsmtpd; the same plugin name and note as Haraka.

config/plugins::

    tarpit delay 5
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from qptwisted import DECLINED, LOGINFO, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin

HOOKS = ("helo", "ehlo", "mail", "rcpt", "data", "data_post", "noop", "vrfy", "help",
         "unrecognized_command")


class Tarpit(PolicyPlugin):
    """Delay the replies to suspicious clients."""

    name = "tarpit"
    delay: float = arg.duration(5, "how long each reply to a suspicious client waits")
    max: float = arg.duration(60, "cap on a delay a plugin asks for in the tarpit note")
    hooks: list[str] = arg.list(list(HOOKS), "the hooks that wait, H,H,... (default: every command's)")

    def register(self, *args: str) -> None:
        """Hook the chosen hooks, first in their chains."""
        for hook in self.hooks:
            self.register_hook(hook, self.slow_down, unshift=True)

    def delay_for(self, transaction: Transaction) -> float:
        """Seconds to wait before answering this client (0: none)."""
        connection = transaction.connection
        notes = connection.notes
        if connection.relay_client or notes.get("whitelisthost"):
            return 0.0
        mark = notes.get("tarpit")
        if mark and not isinstance(mark, bool):
            try:
                return min(float(mark), self.max)
            except (TypeError, ValueError):
                return self.delay
        if mark or notes.get("naughty") or notes.get("earlytalker") or notes.get("karma", 0) < 0:
            return self.delay
        return 0.0

    def slow_down(self, transaction: Transaction, *args: Any, **kwargs: Any) -> HookAnswer:
        """Wait, then let the chain go on."""
        seconds = self.delay_for(transaction)
        if seconds <= 0:
            return DECLINED
        self.log(LOGINFO, f"tarpitting {transaction.connection.remote_ip} for {seconds:g}s")
        later: Deferred[Any] = deferLater(self.clock, seconds, lambda: DECLINED)
        return later
