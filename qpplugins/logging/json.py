"""logging/json: one JSON object per log line, with connection and transaction ids.

Each line is an object such as::

    {"time": "2026-01-02T03:04:05.678Z", "level": "INFO", "levelno": 6, "pid": 1234,
     "conn": 17, "txn": 3, "ip": "192.0.2.1", "hook": "rcpt", "plugin": "rcpt_ok",
     "msg": "..."}

(``conn``, ``txn`` and ``ip`` are on every line: ``null`` for lines not
tied to a connection, such as start-up and reload), ready for jq, Loki,
Elasticsearch and friends: ``jq 'select(.conn == 17)'`` is one session.
Every refusal a plugin answers is a line of its own, ``"event": "deny"``
with the ``"hook"``, ``"code"`` (``DENY``, ``DENYSOFT`` ...), ``"stage"``
(``message`` for the hooks from MAIL to the queue, else ``connection``)
and the reply text in ``"msg"`` (level INFO), which ``qpsmtpd
log-summary`` counts. Haraka users asked for this
(``log.ini format=json``); qpsmtpd has nothing like it.

Arguments: ``[loglevel N] [PATH]``; ``PATH`` may contain strftime patterns
(a new file when the name changes) and is relative to the config
directory's parent; without it, lines go to stderr. ``N`` defaults to the
configured ``loglevel``.

config/logging::

    logging/json loglevel 6 log/qpsmtpd-%Y%m%d.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from qptwisted import DECLINED, LOGINFO, OK, Code, HookAnswer, Plugin, Transaction, arg

from ._common import LEVEL_NAMES, LogFile, ids, level_argument

#: the hooks whose refusals refuse a message (a transaction), not a connection
MESSAGE_HOOKS = frozenset({"mail_pre", "mail", "rcpt_pre", "rcpt", "data", "data_headers_end", "data_post",
                           "queue_pre", "queue"})


class JsonLog(Plugin):
    """Structured log lines."""

    name = "logging/json"
    #: where lines go without a path (tests replace it)
    stream: TextIO | None = None

    loglevel: int | None = level_argument()
    path: str | None = arg.str(None, "the log file, strftime patterns allowed (relative: in the config "
                               "directory's parent; default: stderr)", positional=True)

    def register(self, *args: str) -> None:
        """Nothing is opened before the first line."""
        self.level = self.engine.loglevel if self.loglevel is None else self.loglevel
        self.file = None if self.path is None else \
            LogFile(self.path, lambda name: Path(os.path.normpath(self.engine.config.resolve(
                os.path.join(os.pardir, name)))))

    def close(self) -> None:
        """Close the open file."""
        if self.file is not None:
            self.file.close()

    def event(self, transaction: object, level: int, hook: str | None, plugin: str | None,
              message: str) -> dict[str, Any]:
        """The object written for one line."""
        now = self.clock.seconds()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        event: dict[str, Any] = {"time": stamp, "level": LEVEL_NAMES[min(max(level, 0), 7)],
                                 "levelno": level, "pid": os.getpid()}
        connection_id, transaction_id, ip = ids(transaction)
        event.update(conn=connection_id, txn=transaction_id, ip=ip)
        if hook:
            event["hook"] = hook
        if plugin:
            event["plugin"] = plugin
        event["msg"] = message
        return event

    def hook_deny(self, transaction: Transaction | None, plugin: str | None, code: Code,
                  message: str | None) -> HookAnswer:
        if LOGINFO <= self.level:
            hook = self.engine.hooks.observed_hook
            event = self.event(transaction, LOGINFO, hook, plugin, message or "")
            stage = "message" if hook in MESSAGE_HOOKS else "connection"
            event.update(event="deny", code=code.name, stage=stage)
            self.write(json.dumps(event, ensure_ascii=False))
        return DECLINED

    def write(self, line: str) -> None:
        """One line to the file, or to the stream."""
        if self.file is None:
            (self.stream or sys.stderr).write(line + "\n")
        else:
            self.file.write(line + "\n")

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        if level <= self.level:
            self.write(json.dumps(self.event(transaction, level, hook, plugin, message), ensure_ascii=False))
        return OK
