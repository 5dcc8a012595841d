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

from qptwisted import OK, ArgumentError, HookAnswer, Plugin, arg

from ._common import LEVEL_NAMES, level_argument

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
        raise ValueError(f"argument priority: unknown priority {word!r}")
    return _PRIORITIES[word]


def _facility(word: str) -> int:
    value = getattr(syslog, "LOG_" + word.upper().removeprefix("LOG_"), None)
    if not isinstance(value, int):
        raise ValueError(f"argument facility: unknown facility {word!r}")
    return value


class Syslog(Plugin):
    """Send log lines to syslog."""

    name = "logging/syslog"
    #: the function that sends one line (tests replace it)
    send: Callable[[int, str], None] = staticmethod(syslog.syslog)  # type: ignore[assignment]

    loglevel: int | None = level_argument()
    priority: str | None = arg.str(None, "send every line with this priority (info, LOG_WARNING ...) "
                                   "instead of its own level")
    facility: str = arg.str("mail", "mail, local0 ... local7, daemon ...")
    ident: str = arg.str("qpsmtpd", "the syslog ident")
    logsock: str | None = arg.str(None, "accepted for qpsmtpd; the local socket is always used")

    def register(self, *args: str) -> None:
        """Open the log.

        There is no ``close()``: the system log is one per process, and the
        engine that replaces this one at a reload has opened it already.
        """
        self.level = self.engine.loglevel if self.loglevel is None else self.loglevel
        try:
            self.send_priority = None if self.priority is None else _priority(self.priority)
            self.send_facility = _facility(self.facility)
        except ValueError as err:
            raise ArgumentError(f"plugin {self.plugin_name}: {err}") from None
        syslog.openlog(self.ident, syslog.LOG_PID, self.send_facility)

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        if level <= self.level:
            priority = self.send_priority if self.send_priority is not None else min(max(level, 0), 7)
            name = f"{plugin}: " if plugin else ""
            self.send(priority | self.send_facility, f"{LEVEL_NAMES[min(max(level, 0), 7)]} {name}{message}")
        return OK
