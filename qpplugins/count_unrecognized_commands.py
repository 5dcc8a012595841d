"""count_unrecognized_commands: disconnect clients that keep sending nonsense.

After N unrecognized commands (default 4) the client gets ``521`` and the
connection is closed. Empty lines count too.

config/plugins::

    count_unrecognized_commands 4
"""

from __future__ import annotations

from qptwisted import DECLINED, DENY_DISCONNECT, HookAnswer, Plugin, Transaction


class CountUnrecognizedCommands(Plugin):
    """Close the connection after too many unknown commands."""

    name = "count_unrecognized_commands"

    def register(self, *args: str) -> None:
        """The optional argument is the limit."""
        self.limit = int(args[0]) if args else 4

    def hook_unrecognized_command(self, transaction: Transaction, verb: str, rest: str) -> HookAnswer:
        notes = transaction.connection.notes
        count = notes["unrec_cmd_count"] = notes.get("unrec_cmd_count", 0) + 1
        if count >= self.limit:
            return (DENY_DISCONNECT,
                    f"Closing connection, {count} unrecognized commands. Perhaps you should read RFC 5321?")
        return DECLINED
