"""logging/file: log to a file whose name may contain strftime patterns.

Arguments: ``[loglevel L] [reopen] [tsformat FORMAT] PATH``. ``PATH`` may use
``%Y%m%d`` and friends; a new file is opened when the formatted name changes.
A relative ``PATH`` is taken in the directory the server was started in.
``reopen`` opens the file anew for every line (for log rotation by rename).
``L`` defaults to the configured ``loglevel``.

config/logging::

    logging/file loglevel 6 log/qpsmtpd-%Y%m%d.log
"""

from __future__ import annotations

import os
import time
from functools import partial

from qptwisted import OK, HookAnswer, Plugin, arg

from ._common import LogFile, level_argument


class FileLog(Plugin):
    """Append log lines to a file."""

    name = "logging/file"
    loglevel: int | None = level_argument()
    reopen: bool = arg.flag("open the file anew for every line (rotation by rename)")
    tsformat: str = arg.str("%Y-%m-%d %H:%M:%S", "the strftime format of each line's time stamp")
    path: str = arg.str(help="the log file, strftime patterns allowed (relative: in the config "
                        "directory's parent)", positional=True)

    def register(self, *args: str) -> None:
        """Nothing is opened before the first line."""
        self.level = self.engine.loglevel if self.loglevel is None else self.loglevel
        self.file = LogFile(self.path, partial(self.engine.config.resolve, workdir=True), self.reopen)

    def close(self) -> None:
        """Close the open file."""
        self.file.close()

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        if level <= self.level:
            tag = f"{plugin}: " if plugin else ""
            self.file.write(f"{time.strftime(self.tsformat)} {os.getpid()} {tag}{message}\n")
        return OK
