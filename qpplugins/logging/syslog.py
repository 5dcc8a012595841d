"""logging/syslog: log to the system log.

Arguments (``name value`` pairs):

``loglevel N``
    the highest level sent (default ``loglevel``);
``priority P``
    send every line with this syslog priority (``info``, ``LOG_WARNING`` ...)
    instead of the line's own level;
``ident NAME``
    the syslog ident (default ``qpsmtpd``);
``facility F``
    ``mail`` (default), ``local0`` ... ``local7``, ``daemon`` ...;
``logsock``
    accepted for qpsmtpd compatibility; Python's :mod:`syslog` always
    uses the local socket.

config/logging::

    logging/syslog loglevel 6 facility mail ident qpsmtpd
"""

from __future__ import annotations

import syslog
from collections.abc import Callable

from qptwisted import OK, HookAnswer, Plugin

from ._common import LEVEL_NAMES

_PRIORITIES = {
    "emerg": syslog.LOG_EMERG, "alert": syslog.LOG_ALERT, "crit": syslog.LOG_CRIT,
    "err": syslog.LOG_ERR, "error": syslog.LOG_ERR, "warning": syslog.LOG_WARNING,
    "warn": syslog.LOG_WARNING, "notice": syslog.LOG_NOTICE, "info": syslog.LOG_INFO,
    "debug": syslog.LOG_DEBUG,
}


def _priority(word: str) -> int:
    word = word.lower().removeprefix("log_")
    if word.isdigit():
        return int(word)
    if word not in _PRIORITIES:
        raise ValueError(f"logging/syslog: unknown priority {word!r}")
    return _PRIORITIES[word]


def _facility(word: str) -> int:
    value = getattr(syslog, "LOG_" + word.upper().removeprefix("LOG_"), None)
    if not isinstance(value, int):
        raise ValueError(f"logging/syslog: unknown facility {word!r}")
    return value


class Syslog(Plugin):
    """Send log lines to syslog."""

    name = "logging/syslog"
    #: the function that sends one line (tests replace it)
    send: Callable[[int, str], None] = staticmethod(syslog.syslog)  # type: ignore[assignment]

    def register(self, *args: str) -> None:
        """Parse the pairs and open the log."""
        words = list(args)
        if len(words) % 2:
            raise ValueError(f"logging/syslog: arguments must be 'name value' pairs, got {words}")
        options = {key.lower(): value for key, value in zip(words[::2], words[1::2], strict=True)}
        unknown = set(options) - {"loglevel", "priority", "ident", "facility", "logsock"}
        if unknown:
            raise ValueError(f"logging/syslog: unknown arguments {sorted(unknown)}")
        self.level = int(options.get("loglevel", self.engine.loglevel))
        self.priority = _priority(options["priority"]) if "priority" in options else None
        self.facility = _facility(options.get("facility", "mail"))
        syslog.openlog(options.get("ident", "qpsmtpd"), syslog.LOG_PID, self.facility)

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        if level <= self.level:
            priority = self.priority if self.priority is not None else min(max(level, 0), 7)
            name = f"{plugin}: " if plugin else ""
            self.send(priority | self.facility, f"{LEVEL_NAMES[min(max(level, 0), 7)]} {name}{message}")
        return OK
