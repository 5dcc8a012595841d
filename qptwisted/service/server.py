"""The factory a listener uses, and the service that owns engines and listeners."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterable
from typing import Any

from twisted.application import service, strports
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from qptwisted.core.config import ConfigError, default_config_dir
from qptwisted.core.engine import Engine
from qptwisted.smtp.protocol import SMTPProtocol
from qptwisted.mail.spool import remove_orphans

_log = Logger(namespace="qptwisted")


class SMTPFactory(ServerFactory):
    """Makes an :class:`SMTPProtocol` per connection, all sharing ``engine``.

    Replacing ``engine`` (as a reload does) affects new connections only.
    """

    protocol = SMTPProtocol  # type: ignore[assignment]

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connections = 0
        self.per_ip: Counter[str] = Counter()

    def buildProtocol(self, addr: IAddress | None) -> SMTPProtocol:
        """A protocol for one new connection."""
        return SMTPProtocol(self)

    def opened(self, ip: str) -> tuple[int, int]:
        """Count a new connection; returns (connections, connections from ``ip``)."""
        self.connections += 1
        self.per_ip[ip] += 1
        return self.connections, self.per_ip[ip]

    def closed(self, ip: str) -> None:
        """Forget a connection that ended."""
        self.connections -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


class QPSMTPDService(service.MultiService):
    """The SMTP server as a Twisted service: engine, reload on SIGHUP, listeners.

    Embed it in any Twisted application::

        mx = QPSMTPDService("/etc/qpsmtpd")
        mx.listen("tcp:2525:interface=127.0.0.1")
        mx.setServiceParent(application)
    """

    def __init__(self, config_dir: str | None = None, clock: IReactorTime | None = None,
                 plugin_lines: Iterable[str] | None = None) -> None:
        super().__init__()
        self.config_dir = config_dir or default_config_dir()
        self.clock = clock
        self.plugin_lines = None if plugin_lines is None else list(plugin_lines)
        self.factory = SMTPFactory(self._build())
        self._previous_hup: Any = None
        self._prepared = False

    def _build(self) -> Engine:
        return Engine.from_config(self.config_dir, self.clock, plugin_lines=self.plugin_lines)

    def listen(self, description: str) -> service.Service:
        """Add a listener from an endpoint string (``tcp:2525:interface=127.0.0.1``)."""
        listener = strports.service(description, self.factory)
        listener.setServiceParent(self)
        return listener

    def reload(self) -> bool:
        """Rebuild the engine from the config directory for new connections.

        A broken configuration is logged and the running engine kept.
        """
        try:
            engine = self._build()
        except ConfigError as err:
            _log.error("reload failed, keeping the running configuration: {err}", err=err)
            return False
        self.factory.engine = engine
        _log.info("reloaded: {desc}", desc=engine.describe())
        return True

    def privilegedStartService(self) -> None:
        """Prepare before the ports are bound: twistd binds them here, before :meth:`startService`."""
        self._prepare()
        super().privilegedStartService()

    def startService(self) -> None:
        """Start listening; prepares first when :meth:`privilegedStartService` was not called (embedding)."""
        self._prepare()
        super().startService()

    def _prepare(self) -> None:
        """Log the configuration, remove the spool files a crash left, reload on SIGHUP.

        The SIGHUP handler goes in before any port is bound, so a client that
        can connect can also signal without killing the server.
        """
        if self._prepared:
            return
        self._prepared = True
        _log.info("{desc}", desc=self.factory.engine.describe())
        orphans = remove_orphans(self.factory.engine.spool_dir)
        if orphans:
            _log.warn("removed {n} spool file(s) left by a process that died: {names}",
                      n=len(orphans), names=", ".join(orphans))
        if hasattr(signal, "SIGHUP"):
            from twisted.internet import reactor

            def on_hup(signum: int, frame: object) -> None:
                reactor.callFromThread(self.reload)  # type: ignore[attr-defined]

            try:
                self._previous_hup = signal.signal(signal.SIGHUP, on_hup)
            except ValueError:  # not the main thread (some embedders)
                self._previous_hup = None

    def stopService(self) -> Any:
        """Stop listening; restore the SIGHUP handler."""
        self._prepared = False
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        return super().stopService()
