"""The engine: settings, the loaded plugin chain, clock, log, thread pool, resolver, and their lifecycle.

One engine serves every connection of a listener. A reload (SIGHUP) builds a
new engine for new connections; the old one is *retired*: connections in
progress finish on it, and when the last has ended it is *closed* — every
plugin's ``close()`` runs, its timers stop and its own thread pool (if it has
one) is stopped, so nothing a plugin holds (database handles, Redis
connections, timers) outlives its engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from qptwisted.core.codes import LOGDEBUG, LOGERROR, LOGINFO, LOGWARN, OK
from qptwisted.core.config import Config, ConfigError
from qptwisted.core.groups import group_table
from qptwisted.core.hooks import HookRunner
from qptwisted.core.loader import PluginIndex, Resolved, discover, parse_plugin_line
from qptwisted.core.resolver import Resolver
from qptwisted.core.settings import Settings
from qptwisted.interfaces import IQPPlugin

if TYPE_CHECKING:
    from qptwisted.core.observer import Observer
    from qptwisted.mail.address import Address

_T = TypeVar("_T")
_logger = Logger(namespace="qptwisted")
_LOGGER_LEVELS = {
    0: _logger.critical, 1: _logger.critical, 2: _logger.critical, 3: _logger.error,
    4: _logger.warn, 5: _logger.info, 6: _logger.info, 7: _logger.debug,
}


class Engine:
    """What all connections share: settings, hooks, plugins, clock, log, threads.

    Build it with :meth:`from_config`; plugins are loaded from
    ``config/logging`` first, then ``config/plugins``.

    ``threadpool`` is the pool for blocking plugin work; the service that
    owns it passes it in (and stops it). Without one, the engine starts its
    own on first use and stops it when it is closed. ``resources`` holds
    objects an embedding application hands to its plugins (a database pool,
    a cred portal), which they read as ``self.engine.resources["name"]``.
    """

    def __init__(self, config: Config, clock: IReactorTime | None = None,
                 threadpool: ThreadPool | None = None,
                 resources: Mapping[str, Any] | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        assert clock is not None
        self.config = config
        self.clock = clock
        self.settings = Settings.from_config(config)
        self.resources: dict[str, Any] = dict(resources or {})
        self.hooks = HookRunner(clock, self.log)
        self.plugins: list[IQPPlugin] = []
        self._threadpool = threadpool
        self._own_pool: ThreadPool | None = None
        self._timers: list[LoopingCall] = []
        self._closers: list[Callable[[], Any]] = []
        self._resolver: Any = None
        self._logging = False
        self._connections = 0
        self._retired: Deferred[None] | None = None
        self._closing: Deferred[None] | None = None
        self._told: set[str] = set()

    # -- construction -------------------------------------------------------
    @classmethod
    def from_config(cls, directory: str, clock: IReactorTime | None = None,
                    threadpool: ThreadPool | None = None,
                    plugin_lines: Iterable[str] | None = None,
                    resources: Mapping[str, Any] | None = None) -> Engine:
        """Build an engine from a config directory and load its plugins.

        ``plugin_lines`` replaces ``config/plugins`` (tests, embedding).
        Raises :class:`ConfigError` naming the plugin and line that failed;
        the plugins loaded before the failure are closed again.
        """
        engine = cls(Config(directory), clock, threadpool, resources)
        try:
            factories = discover(engine.config.plugin_dirs())
            engine._load(factories, engine.config.get_list("logging"), "logging")
            lines = engine.config.get_list("plugins") if plugin_lines is None else list(plugin_lines)
            engine._load(factories, lines, "plugins")
            group_table(engine)  # a broken config/policy_groups stops the start, as a broken plugin line does
        except BaseException:
            engine.close()
            raise
        return engine

    def _load(self, factories: PluginIndex, lines: list[str], source: str) -> None:
        for number, line in enumerate(lines, 1):
            self.load(line, factories, f"{self.config.path(source)} line {number} ({line!r})")

    def load(self, line: str, factories: PluginIndex | None = None, where: str = "") -> IQPPlugin:
        """Load the plugin a ``config/plugins`` line names (old qpsmtpd names through their aliases)."""
        factories = factories or discover(self.config.plugin_dirs())
        where = where or f"({line!r})"
        resolved = factories.resolve(parse_plugin_line(line, where), where)
        spec = resolved.line
        if resolved.translated:
            self._deprecated(resolved, where)
        try:
            plugin = resolved.factory(self, spec.args, spec.instance)
            plugin.source = factories.origin(spec.name)
            self.add_plugin(plugin)
        except ConfigError as err:
            raise ConfigError(f"{err} [{where}]") from None
        except Exception as err:
            raise ConfigError(f"plugin {spec.name} failed to load: {type(err).__name__}: {err} "
                              f"[{where}]") from err
        self.log(LOGDEBUG, f"loaded {plugin.plugin_name} from {plugin.source}")
        return plugin

    def _deprecated(self, resolved: Resolved, where: str) -> None:
        """Say once per old spelling that it is deprecated, and how to write it now."""
        alias = resolved.alias
        assert alias is not None
        key = f"{alias.old} {' '.join(resolved.changes)}"
        if key in self._told:
            return
        self._told.add(key)
        what = f"{alias.old} is deprecated ({alias.origin}), loaded as {alias.new}" if alias.renamed else \
            f"{alias.old}: old argument spellings ({alias.origin})"
        changes = "".join(f"; {change}" for change in resolved.changes)
        self.log(LOGWARN, f"{what}{changes}; write: {resolved.line.text()} [{where}]")

    def add_plugin(self, plugin: IQPPlugin) -> IQPPlugin:
        """Register a plugin instance: parse its arguments, its ``hook_*`` methods, then ``register``."""
        plugin.configure()
        for attribute in dir(type(plugin)):
            if attribute.startswith("hook_"):
                plugin.register_hook(attribute[5:], getattr(plugin, attribute))
        plugin.register(*plugin.args)
        self.plugins.append(plugin)
        return plugin

    def plugin(self, name: str) -> IQPPlugin:
        """The loaded plugin named ``name`` (its instance name, e.g. ``dnsbl:2``, or its name)."""
        for plugin in self.plugins:
            if plugin.plugin_name == name:
                return plugin
        for plugin in self.plugins:
            if plugin.name == name:
                return plugin
        raise KeyError(f"no plugin {name!r} is loaded (loaded: "
                       f"{', '.join(p.plugin_name for p in self.plugins) or 'none'})")

    # -- services for plugins ------------------------------------------------
    def config_list(self, name: str) -> list[str]:
        """Config values of ``name``: a ``config`` hook's OK answer, else the file."""
        return self.hook_config("config", name) or self.config.get_list(name)

    def user_config(self, address: Address, name: str) -> list[str]:
        """Per-user config (qpsmtpd's ``$address->config``): the ``user_config`` hook, else global."""
        return self.hook_config("user_config", address, name) or self.config_list(name)

    def hook_config(self, hook: str, *args: Any) -> list[str] | None:
        """The values a ``config``/``user_config`` plugin supplies (its OK answer), or None."""
        if not self.hooks.has(hook):
            return None
        result = self.hooks.run_sync(hook, None, *args)
        if result.code != OK:
            return None
        values = result.value if isinstance(result.value, list) else \
            [result.message if result.message is not None else result.value]
        return [str(value) for value in values if value is not None]

    @property
    def loglevel(self) -> int:
        """The configured log level (0 emergency … 7 debug)."""
        return self.settings.loglevel

    def logs(self, level: int) -> bool:
        """True if a line at ``level`` would be logged (a ``logging`` plugin takes every line).

        Lets a hot path skip formatting a line nobody will read.
        """
        return level <= self.settings.loglevel or self.hooks.has("logging")

    def log(self, level: int, message: str, plugin: str | None = None, hook: str | None = None,
            failure: Failure | None = None, transaction: Any = None, **_: Any) -> None:
        """Log through the ``logging`` hook, else Twisted's log when ``level <= loglevel``.

        The line belongs to ``transaction``, else to the one whose hook is running (loggers tag it).
        """
        if not self._logging and self.hooks.has("logging"):
            self._logging = True  # a logging plugin that logs (or breaks) must not recurse
            try:
                owner = self.hooks.current if transaction is None else transaction
                self.hooks.run_sync("logging", owner, level, hook, plugin, message)
            finally:
                self._logging = False
            return
        if level <= self.settings.loglevel:
            tag = f"[{plugin}] " if plugin else ""
            extra = {"log_failure": failure} if failure is not None else {}
            _LOGGER_LEVELS[min(max(level, 0), 7)]("{tag}{message}", tag=tag, message=message, **extra)

    def defer_to_thread(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        """Run blocking work on the engine's bounded thread pool."""
        pool = self._threadpool
        if pool is None:
            pool = self._threadpool = self._own_pool = _start_pool()
        elif getattr(pool, "inline", False):  # the test kit's stand-in: run now, in this thread
            return maybeDeferred(function, *args, **kwargs)
        reactor: Any = self.clock
        if not hasattr(reactor, "callFromThread"):  # an injected Clock: results come back via the reactor
            from twisted.internet import reactor
        return deferToThreadPool(reactor, pool, function, *args, **kwargs)

    def call_every(self, seconds: float, function: Callable[[], Any], now: bool = False) -> LoopingCall:
        """Call ``function`` every ``seconds`` on the engine's clock until the engine closes.

        A failure is logged and the calls go on (a store that cannot prune now may next time).
        """

        def guarded() -> Any:
            d = maybeDeferred(function)
            d.addErrback(lambda failure: self.log(LOGERROR, f"periodic {getattr(function, '__name__', '')} "
                                                  f"failed: {failure.getErrorMessage()}", failure=failure))
            return d

        call = LoopingCall(guarded)
        call.clock = self.clock
        self._timers.append(call)
        call.start(seconds, now=now)
        return call

    @property
    def resolver(self) -> Resolver:
        """The DNS resolver (:class:`qptwisted.core.resolver.Resolver`), built on first use."""
        if self._resolver is None:
            reactor = self.clock if hasattr(self.clock, "connectUDP") else None
            self._resolver = Resolver.from_config(self.config_list, reactor)
            self._resolver.observer = self.hooks.observer
        return self._resolver  # type: ignore[no-any-return]

    @resolver.setter
    def resolver(self, resolver: Any) -> None:
        self._resolver = resolver

    @property
    def observer(self) -> Observer | None:
        """Who hears of hook answers, sessions and DNS lookups (:mod:`qptwisted.core.observer`)."""
        return self.hooks.observer

    @observer.setter
    def observer(self, observer: Observer | None) -> None:
        self.hooks.observer = observer
        if isinstance(self._resolver, Resolver):
            self._resolver.observer = observer

    def describe(self) -> str:
        """One line for the start-up log."""
        names = ", ".join(plugin.plugin_name for plugin in self.plugins)
        return f"qptwisted engine for {self.settings.me}: {len(self.plugins)} plugins ({names})"

    # -- lifecycle ----------------------------------------------------------------
    def acquire(self) -> None:
        """A connection starts using this engine."""
        self._connections += 1

    def release(self) -> None:
        """A connection that used this engine ended; a retired engine closes after its last."""
        self._connections -= 1
        if self._connections <= 0 and self._retired is not None:
            self.close().chainDeferred(self._retired)

    @property
    def connections(self) -> int:
        """Connections in progress on this engine."""
        return self._connections

    def retire(self) -> Deferred[None]:
        """Take no new connections; close once the connections in progress have ended."""
        if self._retired is None:
            self._retired = Deferred()
            if self._connections <= 0:
                self.close().chainDeferred(self._retired)
        return self._retired

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closing is not None

    def close(self) -> Deferred[None]:
        """Release everything: plugins' ``close()`` (last loaded first), timers, the own thread pool.

        Idempotent; the Deferred fires when every plugin has closed. A
        plugin whose ``close()`` fails is logged; the others still close.
        """
        if self._closing is not None:
            return self._closing if not self._closing.called else succeed(None)
        for call in self._timers:
            if call.running:
                call.stop()
        self._timers = []
        closing = self._close_each([(plugin.close, plugin.plugin_name) for plugin in reversed(self.plugins)])
        done: Deferred[None] = closing.addCallback(lambda _: self._run_closers())
        done.addCallback(lambda _: self._stop_own_pool())
        self._closing = done
        self.log(LOGINFO, f"engine closed ({len(self.plugins)} plugins)")
        return done

    def on_close(self, function: Callable[[], Any]) -> None:
        """Call ``function`` when the engine closes, once its plugins have (it may return a Deferred).

        For what a library starts on an engine's behalf and must stop with it
        (the Maildir writer process of :mod:`qptwisted.lib.maildir_writer`).
        """
        self._closers.append(function)

    def _close_each(self, calls: list[tuple[Callable[[], Any], str | None]]) -> Deferred[Any]:
        """Call each ``(function, plugin name)``; fires once all have finished. A failure is logged."""
        closing = []
        for function, plugin in calls:
            d = maybeDeferred(function)
            d.addErrback(self._close_failed, plugin)
            closing.append(d)
        return DeferredList(closing)

    def _close_failed(self, failure: Failure, plugin: str | None) -> None:
        self.log(LOGERROR, f"close() failed: {failure.getErrorMessage()}", plugin=plugin, failure=failure)

    def _run_closers(self) -> Deferred[Any]:
        closers, self._closers = self._closers, []
        return self._close_each([(function, None) for function in closers])

    def _stop_own_pool(self) -> None:
        pool, self._own_pool = self._own_pool, None
        if pool is not None:
            if pool is self._threadpool:
                self._threadpool = None
            pool.stop()


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


def new_threadpool(size: int = 10) -> ThreadPool:
    """A bounded pool for blocking plugin work, not started.

    Daemon workers: a process whose reactor never shuts down (a test run, an
    embedding script) must still be able to exit.
    """
    pool = ThreadPool(minthreads=0, maxthreads=size, name="qptwisted")
    pool.threadFactory = _daemon_thread  # type: ignore[assignment]
    return pool


def _start_pool() -> ThreadPool:
    pool = new_threadpool()
    pool.start()
    return pool


__all__ = ["Engine", "new_threadpool"]
