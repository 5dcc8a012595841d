"""systemd's readiness protocol (``sd_notify``) and its watchdog.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the Unix socket
named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace);
see sd_notify(3). Without ``$NOTIFY_SOCKET`` (not started by systemd with
``Type=notify``) every function here does nothing, so the server calls them
unconditionally:

- :func:`ready` after a reload (:class:`Notifier` sends the first);
- :func:`reloading` when a reload starts (SIGHUP);
- :func:`stopping` when a stop starts (SIGTERM, before the drain);
- :class:`Notifier` sends READY when the reactor runs, and pings
  ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC`` from the reactor, so a wedged
  reactor is restarted by systemd (``WatchdogSec=`` in the unit).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

_log = Logger(namespace="qptwisted.service.notify")


def notify(*lines: str, environ: Any = None) -> bool:
    """Send ``lines`` (``READY=1`` ...) to systemd; False when there is no socket or sending failed."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except OSError as err:
        _log.warn("sd_notify to {address} failed: {err}", address=env.get("NOTIFY_SOCKET"), err=err)
        return False
    return True


def ready(status: str = "") -> bool:
    """The server accepts connections (``READY=1``; ``STATUS=`` when given)."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading() -> bool:
    """A reload starts; :func:`ready` follows when it is done."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


def stopping() -> bool:
    """The server is shutting down (draining connections)."""
    return notify("STOPPING=1", "STATUS=draining connections")


def watchdog_interval(environ: Any = None) -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None when not asked for us."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (our parent)
    return int(usec) / 2e6


class Notifier(service.Service):
    """Tells systemd READY once the reactor runs (the listeners are bound), and pings its watchdog.

    Add it last to the service tree, so every listener is up when it starts.
    """

    def __init__(self, status: str = "", clock: Any = None, environ: Any = None) -> None:
        self.status = status
        self.clock = clock
        self.environ = environ
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        """READY when the reactor runs; the watchdog, if systemd asked for it."""
        super().startService()
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor as clock
        clock.callWhenRunning(self._ready)  # type: ignore[union-attr]
        interval = watchdog_interval(self.environ)
        if interval is not None:
            self._loop = LoopingCall(notify, "WATCHDOG=1", environ=self.environ)
            self._loop.clock = clock
            self._loop.start(interval, now=True)

    def _ready(self) -> None:
        notify("READY=1", *([f"STATUS={self.status}"] if self.status else []), environ=self.environ)

    def stopService(self) -> Any:
        """Stop the watchdog pings."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return super().stopService()


def clean_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` without systemd's variables meant for this process (for the processes it starts)."""
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                "LISTEN_FDNAMES"):
        env.pop(key, None)
    return env


__all__ = ["notify", "ready", "reloading", "stopping", "watchdog_interval", "Notifier", "clean_environment"]
