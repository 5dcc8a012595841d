"""count_unrecognized_commands: disconnect clients that keep sending nonsense.

After N unrecognized commands (default 4) the client gets ``521`` and the
connection is closed. Empty lines count too.

Argument: the limit N (also written ``max N``).

config/plugins::

    count_unrecognized_commands 4
"""

from __future__ import annotations

from qptwisted import DECLINED, DENY_DISCONNECT, HookAnswer, Plugin, Transaction, arg


class CountUnrecognizedCommands(Plugin):
    """Close the connection after too many unknown commands."""

    name = "count_unrecognized_commands"
    max: int = arg.int(4, "unrecognized commands before the connection is closed", positional=True)

    def hook_unrecognized_command(self, transaction: Transaction, verb: str, rest: str) -> HookAnswer:
        notes = transaction.connection.notes
        count = notes["unrec_cmd_count"] = notes.get("unrec_cmd_count", 0) + 1
        if count >= self.max:
            return (DENY_DISCONNECT,
                    f"Closing connection, {count} unrecognized commands. Perhaps you should read RFC 5321?")
        return DECLINED
