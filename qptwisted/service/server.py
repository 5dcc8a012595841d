"""The factory a listener uses, and the service that owns engines, listeners and the thread pool."""

from __future__ import annotations

import ipaddress
import signal
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.application import service, strports
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from qptwisted.core.config import ConfigError, default_config_dir
from qptwisted.core.engine import Engine, new_threadpool
from qptwisted.core.observer import Observer
from qptwisted.core.replies import format_reply
from qptwisted.mail.spool import remove_orphans
from qptwisted.service import notify
from qptwisted.service.proxy import proxy_layer
from qptwisted.smtp.protocol import ListenerContext, SMTPProtocol

_log = Logger(namespace="qptwisted")


class _TooMany(Protocol):
    """Says 421 and closes: the answer to a connection over ``max_connections`` or ``max_conn_ip``."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply

    def connectionMade(self) -> None:
        self.transport.write(self.reply)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


def fd_limit(raise_soft: bool = False) -> int:
    """The process's open-file limit; with ``raise_soft`` the soft limit is raised to the hard one first."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if raise_soft and hard != soft:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 65536


def default_max_connections(limit: int) -> int:
    """Connections a listener takes when ``max_connections`` is not set: the fd limit less headroom.

    Each connection holds one descriptor, and may hold a spool file and a
    connection to a downstream or a database for a while; the rest of the
    process (listeners, log files, DNS sockets, stores) needs some too.
    """
    return max(8, (limit - 64) // 2)


def _loopback(ip: str) -> bool:
    # local injection (a content filter handing mail back, monitoring) is not a flood from outside,
    # as Postfix exempts $mynetworks from smtpd_client_connection_limit by default
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class SMTPFactory(ServerFactory, ListenerContext):
    """Makes an :class:`SMTPProtocol` per connection, all sharing ``engine``.

    Replacing ``engine`` (as a reload does) affects new connections only;
    ``protocols`` holds the open connections (for draining). A connection
    over ``max_connections`` (all clients) or ``max_conn_ip`` (one client
    address other than loopback) gets ``421 4.7.0`` and is closed before any
    plugin runs.
    """

    protocol = SMTPProtocol  # type: ignore[assignment]

    def __init__(self, engine: Engine, max_connections: int | None = None) -> None:
        self.engine = engine
        self.connections = 0
        self.per_ip: Counter[str] = Counter()
        self.protocols: weakref.WeakSet[SMTPProtocol] = weakref.WeakSet()
        self._default_max = max_connections if max_connections is not None else \
            default_max_connections(fd_limit())

    @property
    def max_connections(self) -> int:
        """The cap on connections at once (``max_connections``, else derived from the fd limit)."""
        return self.engine.settings.max_connections or self._default_max

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """A protocol for one new connection: the PROXY layer first when ``proxy_hosts`` lists proxies."""
        layer = proxy_layer(self, addr)
        return layer if layer is not None else self.smtp_protocol(addr)

    def smtp_protocol(self, addr: IAddress | None) -> Protocol:
        """The SMTP protocol for a client at ``addr`` (or the 421 of a full house)."""
        settings = self.engine.settings
        ip = getattr(addr, "host", "")
        if self.connections >= self.max_connections:
            return _TooMany(format_reply(421, f"{settings.me} Too many connections, try again later",
                                         "4.7.0"))
        if settings.max_conn_ip and self.per_ip.get(ip, 0) >= settings.max_conn_ip and not _loopback(ip):
            return _TooMany(format_reply(421, f"{settings.me} Too many connections from {ip}, try again "
                                         "later", "4.7.0"))
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
#: the listen backlog unless the endpoint says otherwise (the kernel caps it at net.core.somaxconn)
DEFAULT_BACKLOG = 1024
_BACKLOG_KINDS = ("tcp", "tcp6", "ssl", "unix")


def with_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """An endpoint string with a large listen backlog, unless it names one (Twisted's default is 50)."""
    kind = description.split(":", 1)[0].lower()
    if description.isdigit():
        kind = "tcp"
    if kind in _BACKLOG_KINDS and "backlog=" not in description:
        return f"{description}:backlog={backlog}"
    return description


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
    ``observer`` (metrics, the web view) is given to every engine it builds.
    """

    def __init__(self, config_dir: str | None = None, clock: IReactorTime | None = None,
                 plugin_lines: Iterable[str] | None = None, resources: Mapping[str, Any] | None = None,
                 threads: int = 10, grace: float = DEFAULT_GRACE, observer: Observer | None = None) -> None:
        super().__init__()
        self.grace = grace
        self.observer = observer
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
        engine = Engine.from_config(self.config_dir, self.clock, self.threadpool, self.plugin_lines,
                                    self.resources)
        engine.observer = self.observer
        return engine

    def listen(self, description: str) -> service.Service:
        """Add a listener from an endpoint string (``tcp:2525:interface=127.0.0.1``).

        TCP, TLS and Unix listeners get a backlog of 1024 unless ``backlog=N`` is given.
        """
        listener = strports.service(with_backlog(description), self.factory)
        listener.setServiceParent(self)
        return listener

    def reload(self) -> bool:
        """Rebuild the engine from the config directory for new connections.

        A broken configuration is logged and the running engine kept. The
        old engine is retired: it closes when its last connection has ended.
        systemd (``Type=notify``) hears RELOADING, then READY either way.
        """
        notify.reloading()
        try:
            engine = self._build()
        except ConfigError as err:
            _log.error("reload failed, keeping the running configuration: {err}", err=err)
            notify.ready("reload failed, running the previous configuration")
            return False
        old, self.factory.engine = self.factory.engine, engine
        old.retire()
        _log.info("reloaded: {desc}", desc=engine.describe())
        notify.ready()
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
        for plugin in self.engine.plugins:
            _log.info("plugin {name} loaded from {source}", name=plugin.plugin_name, source=plugin.source)
        limit = fd_limit(raise_soft=True)
        self.factory._default_max = default_max_connections(limit)
        _log.info("open-file limit {limit}: up to {max} connections at once ({source})", limit=limit,
                  max=self.factory.max_connections,
                  source="config max_connections" if self.engine.settings.max_connections else "derived")
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
        notify.stopping()
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
