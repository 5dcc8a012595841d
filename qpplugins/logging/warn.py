"""logging/warn: log to standard error, as qpsmtpd does by default.

Argument: the highest level written (default ``loglevel`` from config, else
4), also written ``loglevel N``; ``LOGINFO`` and ``+1``/``-1`` relative to
the configured level work too.

config/logging::

    logging/warn 6
"""

from __future__ import annotations

import os
import sys

from qptwisted import OK, HookAnswer, Plugin

from ._common import level_argument


class Warn(Plugin):
    """Write log lines to stderr."""

    name = "logging/warn"
    loglevel: int | None = level_argument(positional=True)

    @property
    def level(self) -> int:
        """The highest level written."""
        return self.engine.loglevel if self.loglevel is None else self.loglevel

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        if level <= self.level:
            tag = f"{plugin}: " if plugin else ""
            sys.stderr.write(f"{os.getpid()} {tag}{message}\n")
        return OK
