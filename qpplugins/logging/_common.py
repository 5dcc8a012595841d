"""What the stock loggers share: the stderr logger with ids, the level argument, the ids of a hook."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from qptwisted import OK, HookAnswer, Plugin, arg

LEVEL_NAMES = ("EMERG", "ALERT", "CRIT", "ERROR", "WARN", "NOTICE", "INFO", "DEBUG")


def level_argument(positional: bool = False) -> Any:
    """Declare ``loglevel``: the highest level written (default: the configured ``loglevel``)."""
    return arg.level(None, "the highest level written: 0..7, LOGINFO ..., or +N/-N relative to config "
                     "loglevel (default: config loglevel)", positional=positional)


def ids(transaction: Any) -> tuple[int | None, int | None, str | None]:
    """``(connection id, transaction id, remote ip)`` of the hook being run, if any."""
    if transaction is None:
        return None, None, None
    connection = getattr(transaction, "connection", None)
    if connection is None:
        return None, getattr(transaction, "id", None), None
    return connection.id, transaction.id, connection.remote_ip


class LogFile:
    """A log file named by a strftime pattern: opened at the first line, anew when the name changes.

    After :meth:`close` a late line (an engine logs its own closing) still
    gets written, but its file is closed again at once, so nothing stays open.
    """

    def __init__(self, pattern: str, resolve: Callable[[str], Path], reopen: bool = False) -> None:
        self.pattern = pattern
        self.resolve = resolve
        self.reopen = reopen
        self._name = ""
        self._handle: TextIO | None = None
        self._closed = False

    def write(self, line: str) -> None:
        """Append ``line`` (with its newline) to the file the pattern names now."""
        name = str(self.resolve(time.strftime(self.pattern)))
        if self._handle is None or name != self._name or self.reopen:
            self._release()
            os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
            self._handle = open(name, "a", encoding="utf-8", buffering=1)
            self._name = name
        self._handle.write(line)
        if self._closed:
            self._release()

    def close(self) -> None:
        """Close the file; later lines open and close it each time."""
        self._closed = True
        self._release()

    def _release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()


class TaggedLogger(Plugin):
    """A stderr logger that tags each line with :meth:`tag`; ``logging/connection_id`` and friends."""

    #: where lines go (tests replace it)
    stream: TextIO | None = None
    loglevel: int | None = level_argument(positional=True)

    @property
    def level(self) -> int:
        """The highest level written."""
        return self.engine.loglevel if self.loglevel is None else self.loglevel

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
