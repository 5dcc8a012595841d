"""content_log: append a copy of every message to a log file.

After DATA each message is appended, mbox style (a ``From sender date``
line, the message, a blank line), to the file named by
``config/content_log_file``, a strftime pattern (default ``mail/%Y%m%d``,
relative to the config directory's parent, the qpsmtpd home). Writing runs
on the engine's thread pool. ``config/content_log_enabled`` set to ``0``
(or ``no``, ``off``, ``false``) turns the plugin off without removing it
from ``config/plugins``. No arguments.

config/plugins::

    content_log
"""

from __future__ import annotations

import os
import time

from qptwisted import DECLINED, LOGERROR, LOGINFO, ConfigError, HookAnswer, Plugin, Transaction, parse_bool


class ContentLog(Plugin):
    """Append messages to a dated file."""

    name = "content_log"
    strict_arguments = True

    def register(self, *args: str) -> None:
        """Read the two config files."""
        try:
            self.enabled = parse_bool(self.config("content_log_enabled", "1") or "1")
        except ValueError as err:
            raise ConfigError(f"content_log: config content_log_enabled: {err}") from None
        self.pattern = self.config("content_log_file") or os.path.join("mail", "%Y%m%d")

    def exclude(self) -> bool:
        """True if logging is disabled."""
        return not self.enabled

    def log_filename(self, now: float | None = None) -> str:
        """The file for ``now`` (seconds since the epoch)."""
        name = time.strftime(self.pattern, time.localtime(self.clock.seconds() if now is None else now))
        return os.path.normpath(self.engine.config.resolve(os.path.join(os.pardir, name)))

    @staticmethod
    def _append(path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "ab") as handle:
            handle.write(data)

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        if self.exclude():
            return DECLINED
        sender = transaction.sender.address if transaction.sender and not transaction.sender.is_null else "<>"
        stamp = time.asctime(time.localtime(self.clock.seconds()))
        data = f"From {sender} {stamp}\n".encode() + transaction.message_bytes() + b"\n"
        path = self.log_filename()

        def failed(failure: object) -> HookAnswer:
            self.log(LOGERROR, f"cannot write {path}: {getattr(failure, 'getErrorMessage', str)()}")
            return DECLINED

        def written(_: object) -> HookAnswer:
            self.log(LOGINFO, f"logged {len(data)} bytes to {path}")
            return DECLINED

        return self.defer_to_thread(self._append, path, data).addCallbacks(written, failed)
