"""logging/adaptive: log little for accepted mail and much for refused mail.

Lines up to ``loglevel`` are written at once. Lines above it are kept per
connection until its transaction ends: then the ones up to ``reject`` are
written if anything was refused in it (the ``deny`` hook fired), else the
ones up to ``accept``, each prefixed with ``prefix``. So a refused message
leaves its full story in the log and a clean one a short line.

Arguments (``name value`` pairs): ``loglevel N`` (default ``loglevel``),
``accept N`` (default: same as ``loglevel``), ``reject N`` (default 7),
``prefix C`` (default a backquote). Output goes to stderr.

Better than qpsmtpd: the buffer is per connection (qpsmtpd had one per
process, which the forking servers made work) and bounded (1000 lines).

config/logging::

    logging/adaptive loglevel 4 accept 5 reject 7 prefix `
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from qptwisted import DECLINED, OK, HookAnswer, Plugin, Transaction

from ._common import ids

MAX_LINES = 1000


class Adaptive(Plugin):
    """Buffer detailed log lines and write them depending on the outcome."""

    name = "logging/adaptive"
    #: where lines go (tests replace it)
    stream: TextIO | None = None

    def register(self, *args: str) -> None:
        """Parse the pairs."""
        words = list(args)
        if len(words) % 2:
            raise ValueError(f"logging/adaptive: arguments must be 'name value' pairs, got {words}")
        options = {key.lower(): value for key, value in zip(words[::2], words[1::2], strict=True)}
        unknown = set(options) - {"loglevel", "accept", "reject", "prefix"}
        if unknown:
            raise ValueError(f"logging/adaptive: unknown arguments {sorted(unknown)}")
        self.level = int(options.get("loglevel", self.engine.loglevel))
        self.accept = int(options.get("accept", self.level))
        self.reject = int(options.get("reject", 7))
        self.prefix = options.get("prefix", "`")
        self.buffers: dict[int, list[tuple[int, str]]] = {}
        self.rejected: set[int] = set()

    def _write(self, line: str) -> None:
        (self.stream or sys.stderr).write(f"{os.getpid()} {line}\n")

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        line = f"{plugin}: {message}" if plugin else message
        if level <= self.level:
            self._write(line)
            return OK
        connection_id = ids(transaction)[0]
        if connection_id is not None and level <= max(self.accept, self.reject):
            buffer = self.buffers.setdefault(connection_id, [])
            if len(buffer) < MAX_LINES:
                buffer.append((level, line))
        return OK

    def hook_deny(self, transaction: Transaction, plugin: str | None, code: Any,
                  message: str | None) -> HookAnswer:
        self.rejected.add(transaction.connection.id)
        return DECLINED

    def flush(self, connection_id: int) -> None:
        """Write the buffered lines of a connection as its outcome says."""
        limit = self.reject if connection_id in self.rejected else self.accept
        self.rejected.discard(connection_id)
        for level, line in self.buffers.pop(connection_id, ()):
            if level <= limit:
                self._write(f"{self.prefix}{line}")

    def hook_reset_transaction(self, transaction: Transaction) -> HookAnswer:
        self.flush(transaction.connection.id)
        return DECLINED

    def hook_post_connection(self, transaction: Transaction) -> HookAnswer:
        self.flush(transaction.connection.id)
        return DECLINED
