"""logging/connection_id: log to stderr with the connection's id on each line.

Lines look like ``1234 [17] rcpt_ok: ...`` (process id, connection id);
lines not tied to a connection have ``[-]``. Since one process serves many
connections, this is what makes their lines tell apart.

Argument: ``[loglevel] N``, the highest level written (default ``loglevel``).

config/logging::

    logging/connection_id loglevel 6
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from qptwisted import OK, HookAnswer, Plugin

from ._common import ids, level_argument


class ConnectionId(Plugin):
    """stderr logger tagged with the connection id."""

    name = "logging/connection_id"
    #: where lines go (tests replace it)
    stream: TextIO | None = None

    def register(self, *args: str) -> None:
        """Read the level."""
        self.level = level_argument(args, self.engine.loglevel)

    def tag(self, transaction: object) -> str:
        """The id part of the line."""
        connection_id = ids(transaction)[0]
        return f"[{connection_id if connection_id is not None else '-'}]"

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        if level <= self.level:
            name = f"{plugin}: " if plugin else ""
            (self.stream or sys.stderr).write(f"{os.getpid()} {self.tag(transaction)} {name}{message}\n")
        return OK
