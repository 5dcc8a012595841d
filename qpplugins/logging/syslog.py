"""logging/syslog: log to the system log, or to any syslog socket.

Each line is one syslog message in the traditional format (RFC 3164, what
glibc's ``syslog(3)`` sends)::

    <22>Jan  2 03:04:05 qpsmtpd[1234]: INFO rcpt_ok: message

sent with the standard library's :class:`logging.handlers.SysLogHandler`. A
syslog daemon that restarts is reconnected to at the next line; a line that
cannot be sent goes to standard error instead (and the failure is said once).

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
``logsock S``
    where to send: the path of a Unix socket (default ``/dev/log``), or
    ``udp:HOST:PORT`` / ``tcp:HOST:PORT`` for a remote daemon; qpsmtpd's
    words ``unix`` and ``native`` mean ``/dev/log``, ``inet`` and ``udp``
    mean ``udp:127.0.0.1:514``, ``tcp`` means ``tcp:127.0.0.1:514``.

config/logging::

    logging/syslog loglevel 6 facility mail ident qpsmtpd
    logging/syslog facility local3 logsock /run/systemd/journal/syslog
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys
import syslog
import time
from typing import Any

from qptwisted import OK, ArgumentError, HookAnswer, Plugin, arg

from ._common import LEVEL_NAMES, level_argument

_PRIORITIES = {
    "emerg": syslog.LOG_EMERG, "alert": syslog.LOG_ALERT, "crit": syslog.LOG_CRIT,
    "err": syslog.LOG_ERR, "error": syslog.LOG_ERR, "warning": syslog.LOG_WARNING,
    "warn": syslog.LOG_WARNING, "notice": syslog.LOG_NOTICE, "info": syslog.LOG_INFO,
    "debug": syslog.LOG_DEBUG,
}
_WORDS = {"unix": "/dev/log", "native": "/dev/log", "inet": "udp:127.0.0.1:514",
          "udp": "udp:127.0.0.1:514", "tcp": "tcp:127.0.0.1:514"}


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


def destination(logsock: str | None) -> tuple[str | tuple[str, int], int | None]:
    """``(address, socket type)`` for SysLogHandler from a ``logsock`` argument."""
    where = _WORDS.get((logsock or "unix").lower(), logsock or "/dev/log")
    kind, _, rest = where.partition(":")
    if kind in ("udp", "tcp") and rest:
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"argument logsock: {where!r} is not {kind}:HOST:PORT")
        return (host.strip("[]"), int(port)), socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    return where, None


class _Handler(logging.handlers.SysLogHandler):
    """SysLogHandler with the priority given per line, and standard error when syslog is away."""

    append_nul = False  # glibc sends none; some daemons keep the NUL in the stored line

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failing = False  # lines go to standard error until a send works again
        self._failed = False

    def createSocket(self) -> None:  # noqa: N802 (the library's name)
        """Connect; a daemon that is not there yet is tried again at the next line."""
        try:
            super().createSocket()
        except OSError:
            self.socket = None

    def format(self, record: logging.LogRecord) -> str:
        """The line; on a stream socket each ends in a newline, so the daemon can tell lines apart."""
        text = super().format(record)
        return text + "\n" if self.socktype == socket.SOCK_STREAM else text

    def mapPriority(self, levelName: str) -> str:  # noqa: N802 (the library's name)
        """The record carries the syslog priority name itself."""
        return levelName

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802
        """Write the line to standard error; say once that syslog fails."""
        self._failed = True
        if not self.failing:
            self.failing = True
            print(f"logging/syslog: cannot send to {self.address!r}: {sys.exc_info()[1]}; "
                  "writing to standard error", file=sys.stderr)
        print(record.getMessage(), file=sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        """Send (reconnecting if needed), and notice when syslog is back."""
        self._failed = False
        super().emit(record)
        if self.failing and not self._failed:
            self.failing = False
            print(f"logging/syslog: sending to {self.address!r} again", file=sys.stderr)


_NAMES = {value: name for name, value in _PRIORITIES.items() if name not in ("error", "warn")}


class Syslog(Plugin):
    """Send log lines to syslog."""

    name = "logging/syslog"

    loglevel: int | None = level_argument()
    priority: str | None = arg.str(None, "send every line with this priority (info, LOG_WARNING ...) "
                                   "instead of its own level")
    facility: str = arg.str("mail", "mail, local0 ... local7, daemon ...")
    ident: str = arg.str("qpsmtpd", "the syslog ident")
    logsock: str | None = arg.str(None, "a Unix socket path (default /dev/log), udp:HOST:PORT or "
                                  "tcp:HOST:PORT")

    def register(self, *args: str) -> None:
        """Parse the arguments and open the socket (a missing daemon is no error yet)."""
        self.level = self.engine.loglevel if self.loglevel is None else self.loglevel
        try:
            self.send_priority = None if self.priority is None else _priority(self.priority)
            self.send_facility = _facility(self.facility)
            address, socktype = destination(self.logsock)
        except ValueError as err:
            raise ArgumentError(f"plugin {self.plugin_name}: {err}") from None
        # a remote daemon needs our name in the header; the local one adds it itself
        self.hostname = "" if isinstance(address, str) else socket.gethostname().split(".")[0] + " "
        # the syslog module's facilities are shifted already; the handler shifts them itself
        self.handler = _Handler(address=address, facility=self.send_facility >> 3, socktype=socktype)

    def close(self) -> None:
        """Close the socket."""
        self.handler.close()

    def line(self, level: int, plugin: str | None, message: str) -> str:
        """The message part of one syslog line, header included."""
        now = time.localtime(self.clock.seconds())
        stamp = time.strftime("%b ", now) + f"{now.tm_mday:2d}" + time.strftime(" %H:%M:%S", now)
        name = f"{plugin}: " if plugin else ""
        text = message.rstrip("\n").replace("\n", " | ")
        return f"{stamp} {self.hostname}{self.ident}[{os.getpid()}]: " \
               f"{LEVEL_NAMES[min(max(level, 0), 7)]} {name}{text}"

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        if level <= self.level:
            priority = self.send_priority if self.send_priority is not None else min(max(level, 0), 7)
            record = logging.LogRecord("qpsmtpd", logging.INFO, "", 0, self.line(level, plugin, message),
                                       None, None)
            record.levelname = _NAMES.get(priority, "info")
            self.handler.emit(record)
        return OK
