"""The factory a listener uses, and the service that owns engines, listeners and the thread pool."""

from __future__ import annotations

import signal
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.application import service, strports
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from qptwisted.core.config import ConfigError, default_config_dir
from qptwisted.core.engine import Engine, new_threadpool
from qptwisted.mail.spool import remove_orphans
from qptwisted.smtp.protocol import ListenerContext, SMTPProtocol

_log = Logger(namespace="qptwisted")


class SMTPFactory(ServerFactory, ListenerContext):
    """Makes an :class:`SMTPProtocol` per connection, all sharing ``engine``.

    Replacing ``engine`` (as a reload does) affects new connections only;
    ``protocols`` holds the open connections (for draining).
    """

    protocol = SMTPProtocol  # type: ignore[assignment]

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connections = 0
        self.per_ip: Counter[str] = Counter()
        self.protocols: weakref.WeakSet[SMTPProtocol] = weakref.WeakSet()

    def buildProtocol(self, addr: IAddress | None) -> SMTPProtocol:
        """A protocol for one new connection."""
        protocol = SMTPProtocol(self)
        self.protocols.add(protocol)
        return protocol

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

    def live(self) -> list[SMTPProtocol]:
        """The connections still open."""
        return [p for p in self.protocols
                if p.transport is not None and getattr(p.transport, "connected", False)]


#: seconds transactions in flight may take to finish when the server stops
DEFAULT_GRACE = 30.0


def drain(factory: SMTPFactory, grace: float, clock: Any, interval: float = 0.05) -> Deferred[None]:
    """Let the connections of ``factory`` finish: the graceful half of a stop (SIGTERM).

    Call it after the listeners stopped accepting. Sessions between
    transactions get ``421 4.3.2`` and are closed; a transaction in flight
    (a message arriving, a queue hook running) may finish, and its session
    gets the 421 once it is between transactions again; after ``grace``
    seconds what is left is cut. Fires when every connection is gone.
    """
    done: Deferred[None] = Deferred()
    deadline = clock.seconds() + grace

    def check() -> None:
        live = factory.live()
        for protocol in live:
            if protocol.is_idle():
                protocol.session.respond(421, "Service shutting down, try again later", "4.3.2")
                protocol.session.disconnect()
        if not live:
            done.callback(None)
            return
        if clock.seconds() >= deadline:
            _log.warn("grace period over: cutting {n} connection(s)", n=len(live))
            for protocol in live:
                protocol.transport.abortConnection()  # type: ignore[union-attr]
            clock.callLater(interval, done.callback, None)
            return
        clock.callLater(interval, check)

    check()
    return done


class QPSMTPDService(service.MultiService):
    """The SMTP server as a Twisted service: engine, reload on SIGHUP, listeners, thread pool.

    Embed it in any Twisted application::

        mx = QPSMTPDService("/etc/qpsmtpd", resources={"dbpool": pool})
        mx.listen("tcp:2525:interface=127.0.0.1")
        mx.setServiceParent(application)

    ``resources`` is handed to every engine, so plugins find the embedding
    application's objects as ``self.engine.resources[name]``. The service owns
    the thread pool for blocking plugin work: started with the service,
    shared by every engine (a reload keeps it), stopped with the service.
    """

    def __init__(self, config_dir: str | None = None, clock: IReactorTime | None = None,
                 plugin_lines: Iterable[str] | None = None, resources: Mapping[str, Any] | None = None,
                 threads: int = 10, grace: float = DEFAULT_GRACE) -> None:
        super().__init__()
        self.grace = grace
        self.config_dir = config_dir or default_config_dir()
        self.clock = clock
        self.plugin_lines = None if plugin_lines is None else list(plugin_lines)
        self.resources = dict(resources or {})
        self.threadpool: ThreadPool = new_threadpool(threads)
        self.factory = self.make_factory(self._build())
        self._previous_hup: Any = None
        self._prepared = False

    def make_factory(self, engine: Engine) -> SMTPFactory:
        """The factory every listener shares (a subclass may add to it)."""
        return SMTPFactory(engine)

    @property
    def engine(self) -> Engine:
        """The engine new connections get."""
        return self.factory.engine

    def _build(self) -> Engine:
        return Engine.from_config(self.config_dir, self.clock, self.threadpool, self.plugin_lines,
                                  self.resources)

    def listen(self, description: str) -> service.Service:
        """Add a listener from an endpoint string (``tcp:2525:interface=127.0.0.1``)."""
        listener = strports.service(description, self.factory)
        listener.setServiceParent(self)
        return listener

    def reload(self) -> bool:
        """Rebuild the engine from the config directory for new connections.

        A broken configuration is logged and the running engine kept. The
        old engine is retired: it closes when its last connection has ended.
        """
        try:
            engine = self._build()
        except ConfigError as err:
            _log.error("reload failed, keeping the running configuration: {err}", err=err)
            return False
        old, self.factory.engine = self.factory.engine, engine
        old.retire()
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
        """Start the thread pool, log the configuration, remove a crash's spool files, reload on SIGHUP.

        The SIGHUP handler goes in before any port is bound, so a client that
        can connect can also signal without killing the server.
        """
        if self._prepared:
            return
        self._prepared = True
        if not self.threadpool.started:
            self.threadpool.start()
        _log.info("{desc}", desc=self.engine.describe())
        orphans = remove_orphans(self.engine.settings.spool_dir)
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

    def stopService(self) -> Deferred[None]:
        """Stop accepting, drain the connections (``grace``), close the engine, stop the thread pool.

        Closing the engine runs every plugin's ``close()``, so nothing they
        hold (database pools, Redis connections, timers) outlives the service.
        """
        self._prepared = False
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor as clock
        stopped = maybeDeferred(super().stopService)
        stopped.addCallback(lambda _: drain(self.factory, self.grace, clock))
        stopped.addCallback(lambda _: self.engine.retire())
        stopped.addBoth(self._stop_pool)
        return stopped

    def _stop_pool(self, result: object) -> object:
        if self.threadpool.started:
            self.threadpool.stop()
        return result
