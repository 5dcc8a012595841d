"""logging/warn: log to standard error, as qpsmtpd does by default.

Argument: the highest level written (default ``loglevel`` from config, else 4).

config/logging::

    logging/warn 6
"""

from __future__ import annotations

import os
import sys

from qptwisted import OK, HookAnswer, Plugin


class Warn(Plugin):
    """Write log lines to stderr."""

    name = "logging/warn"

    def register(self, *args: str) -> None:
        """The optional argument is the level."""
        self.level = int(args[0]) if args else self.engine.loglevel

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        if level <= self.level:
            tag = f"{plugin}: " if plugin else ""
            sys.stderr.write(f"{os.getpid()} {tag}{message}\n")
        return OK
