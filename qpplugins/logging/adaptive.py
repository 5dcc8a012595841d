"""logging/adaptive: log little for accepted mail and much for refused mail.

Lines up to ``loglevel`` are written at once. Lines above it are kept per
connection until its transaction ends: then the ones up to ``reject`` are
written if anything was refused in it (the ``deny`` hook fired), else the
ones up to ``accept``, each prefixed with ``prefix``. So a refused message
leaves its full story in the log and a clean one a short line.

Arguments (``name value`` pairs): ``loglevel N`` (default: the configured
``loglevel``), ``accept N`` (default: same as ``loglevel``), ``reject N``
(default 7), ``prefix C`` (default a backquote); levels may also be written
``LOGINFO`` or ``+1``/``-1`` relative to the configured one. Output goes to
stderr.

Better than qpsmtpd: the buffer is per connection (qpsmtpd had one per
process, which the forking servers made work) and bounded (1000 lines).

config/logging::

    logging/adaptive loglevel 4 accept 5 reject 7 prefix `
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from qptwisted import DECLINED, OK, HookAnswer, Plugin, Transaction, arg

from ._common import ids, level_argument

MAX_LINES = 1000


class Adaptive(Plugin):
    """Buffer detailed log lines and write them depending on the outcome."""

    name = "logging/adaptive"
    #: where lines go (tests replace it)
    stream: TextIO | None = None

    loglevel: int | None = level_argument()
    accept: int | None = arg.level(None, "the highest level kept for a clean transaction (default: "
                                   "loglevel)")
    reject: int = arg.level(7, "the highest level kept for a transaction with a refusal")
    prefix: str = arg.str("`", "put before every buffered line")

    def register(self, *args: str) -> None:
        """Set up the buffers."""
        self.level = self.engine.loglevel if self.loglevel is None else self.loglevel
        self.accepted = self.level if self.accept is None else self.accept
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
        if connection_id is not None and level <= max(self.accepted, self.reject):
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
        limit = self.reject if connection_id in self.rejected else self.accepted
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
