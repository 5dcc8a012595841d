"""logging/file: log to a file whose name may contain strftime patterns.

Arguments: ``[loglevel L] [reopen] [tsformat FORMAT] PATH``. ``PATH`` may use
``%Y%m%d`` and friends; a new file is opened when the formatted name changes.
``reopen`` opens the file anew for every line (for log rotation by rename).

config/logging::

    logging/file loglevel 6 log/qpsmtpd-%Y%m%d.log
"""

from __future__ import annotations

import os
import time
from typing import TextIO

from qptwisted import OK, HookAnswer, Plugin


class FileLog(Plugin):
    """Append log lines to a file."""

    name = "logging/file"

    def register(self, *args: str) -> None:
        """Parse ``[loglevel L] [reopen] [tsformat F] PATH``."""
        words = list(args)
        self.level = self.engine.loglevel
        self.reopen = False
        self.tsformat = "%Y-%m-%d %H:%M:%S"
        while len(words) > 1:
            word = words.pop(0)
            if word == "loglevel":
                self.level = int(words.pop(0))
            elif word == "reopen":
                self.reopen = True
            elif word == "tsformat":
                self.tsformat = words.pop(0)
            else:
                raise ValueError(f"unknown argument {word!r}")
        if not words:
            raise ValueError("logging/file needs a path")
        self.pattern = words[0]
        self._name = ""
        self._handle: TextIO | None = None

    def _file(self) -> TextIO:
        name = time.strftime(self.pattern)
        if self._handle is None or name != self._name or self.reopen:
            if self._handle is not None:
                self._handle.close()
            directory = os.path.dirname(name)
            if directory:
                os.makedirs(directory, exist_ok=True)
            self._handle = open(name, "a", encoding="utf-8", buffering=1)
            self._name = name
        return self._handle

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        if level <= self.level:
            tag = f"{plugin}: " if plugin else ""
            self._file().write(f"{time.strftime(self.tsformat)} {os.getpid()} {tag}{message}\n")
        return OK
