"""logging/json: one JSON object per log line, with connection and transaction ids.

Each line is an object such as::

    {"time": "2026-01-02T03:04:05.678Z", "level": "INFO", "levelno": 6, "pid": 1234,
     "conn": 17, "txn": 3, "ip": "192.0.2.1", "hook": "rcpt", "plugin": "rcpt_ok",
     "msg": "..."}

(``conn``/``txn``/``ip`` are left out for lines not tied to a connection),
ready for jq, Loki, Elasticsearch and friends. Haraka users asked for this
(``log.ini format=json``); qpsmtpd has nothing like it.

Arguments: ``[loglevel N] [PATH]``; ``PATH`` may contain strftime patterns
(a new file when the name changes) and is relative to the config
directory's parent; without it, lines go to stderr.

config/logging::

    logging/json loglevel 6 log/qpsmtpd-%Y%m%d.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

from qptwisted import OK, HookAnswer, Plugin

from ._common import LEVEL_NAMES, ids


class JsonLog(Plugin):
    """Structured log lines."""

    name = "logging/json"
    #: where lines go without a path (tests replace it)
    stream: TextIO | None = None

    def register(self, *args: str) -> None:
        """Parse ``[loglevel N] [PATH]``."""
        words = list(args)
        self.level = self.engine.loglevel
        if words[:1] == ["loglevel"]:
            if len(words) < 2:
                raise ValueError("logging/json: loglevel needs a number")
            self.level = int(words[1])
            words = words[2:]
        if len(words) > 1:
            raise ValueError(f"logging/json: expected '[loglevel N] [PATH]', got {list(args)}")
        self.pattern = words[0] if words else None
        self._name = ""
        self._handle: TextIO | None = None

    def _output(self) -> TextIO:
        if self.pattern is None:
            return self.stream or sys.stderr
        name = time.strftime(self.pattern)
        if not os.path.isabs(name):
            name = os.path.join(os.path.dirname(os.path.abspath(self.engine.config.directory)), name)
        if self._handle is None or name != self._name:
            if self._handle is not None:
                self._handle.close()
            os.makedirs(os.path.dirname(name), exist_ok=True)
            self._handle = open(name, "a", encoding="utf-8", buffering=1)
            self._name = name
        return self._handle

    def event(self, transaction: object, level: int, hook: str | None, plugin: str | None,
              message: str) -> dict[str, Any]:
        """The object written for one line."""
        now = self.clock.seconds()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        event: dict[str, Any] = {"time": stamp, "level": LEVEL_NAMES[min(max(level, 0), 7)],
                                 "levelno": level, "pid": os.getpid()}
        connection_id, transaction_id, ip = ids(transaction)
        if connection_id is not None:
            event.update(conn=connection_id, txn=transaction_id, ip=ip)
        if hook:
            event["hook"] = hook
        if plugin:
            event["plugin"] = plugin
        event["msg"] = message
        return event

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        if level <= self.level:
            line = json.dumps(self.event(transaction, level, hook, plugin, message), ensure_ascii=False)
            self._output().write(line + "\n")
        return OK
