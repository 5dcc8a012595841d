"""The engine: configuration, the loaded plugin chain, clock, log and thread pool.

One engine serves every connection of a listener; SIGHUP builds a new one for
new connections while connections in progress finish on the old.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from qptwisted.mail.address import Address
from qptwisted.core.codes import LOGINFO, LOGWARN, OK, LogLevel
from qptwisted.core.config import Config, ConfigError
from qptwisted.core.hooks import HookRunner
from qptwisted.core.loader import discover, parse_plugin_line
from qptwisted.core.plugin import Plugin

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
    """

    def __init__(self, config: Config, clock: IReactorTime | None = None,
                 threadpool: ThreadPool | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        assert clock is not None
        self.config = config
        self.clock = clock
        self._threadpool = threadpool
        self._logging = False
        self.loglevel = config.get_int("loglevel", int(LOGWARN))
        self.hooks = HookRunner(clock, self.log)
        self.plugins: list[Plugin] = []
        get_int = config.get_int
        self.me = config.get("me") or socket.gethostname()
        self.greeting = config.get("smtpgreeting")
        self.databytes = get_int("databytes", 0)
        self.timeout = get_int("timeout", 1200)
        self.command_timeout = get_int("timeoutsmtpd", self.timeout)
        self.spool_dir = config.get("spool_dir") or tempfile.gettempdir()
        self.size_threshold = get_int("size_threshold", 1 << 20)
        self.max_command_length = get_int("max_command_length", 512)
        self.max_line_length = get_int("max_line_length", 1000)
        self.max_header_size = get_int("max_header_size", 1 << 20)
        self.max_recipients = get_int("max_recipients", 1000)
        self.plugin_timeout = float(get_int("plugin_timeout", 120))
        self.auth_results_id = config.get("me-auth-results") or self.me

    # -- construction -------------------------------------------------------
    @classmethod
    def from_config(cls, directory: str, clock: IReactorTime | None = None,
                    threadpool: ThreadPool | None = None,
                    plugin_lines: Iterable[str] | None = None) -> Engine:
        """Build an engine from a config directory and load its plugins.

        ``plugin_lines`` replaces ``config/plugins`` (tests, embedding).
        Raises :class:`ConfigError` naming the plugin and line that failed.
        """
        engine = cls(Config(directory), clock, threadpool)
        factories, errors = discover(engine.config.get_list("plugin_dirs"))
        engine._load(factories, errors, engine.config.get_list("logging"), "logging")
        lines = engine.config.get_list("plugins") if plugin_lines is None else list(plugin_lines)
        engine._load(factories, errors, lines, "plugins")
        return engine

    def _load(self, factories: dict[str, Any], errors: list[str], lines: list[str], source: str) -> None:
        for number, line in enumerate(lines, 1):
            name, instance, args = parse_plugin_line(line)
            factory = factories.get(name)
            where = f"{self.config.path(source)}, entry {number} ({line!r})"
            if factory is None:
                hint = "; import errors: " + "; ".join(errors) if errors else ""
                raise ConfigError(f"plugin {name!r} not found: {where}{hint}")
            try:
                self.add_plugin(factory(self, args, instance))
            except ConfigError:
                raise
            except Exception as err:
                raise ConfigError(f"plugin {name!r} failed to load: {where}: "
                                  f"{type(err).__name__}: {err}") from err

    def add_plugin(self, plugin: Plugin) -> Plugin:
        """Register a plugin instance: its ``hook_*`` methods, then its ``register``."""
        for attribute in dir(type(plugin)):
            if attribute.startswith("hook_"):
                plugin.register_hook(attribute[5:], getattr(plugin, attribute))
        plugin.register(*plugin.args)
        self.plugins.append(plugin)
        return plugin

    # -- services for plugins ------------------------------------------------
    def config_list(self, name: str) -> list[str]:
        """Config values of ``name``: a ``config`` hook's OK answer, else the file."""
        return self._hook_config("config", (name,)) or self.config.get_list(name)

    def user_config(self, address: Address, name: str) -> list[str]:
        """Per-user config (qpsmtpd's ``$address->config``): the ``user_config`` hook, else global."""
        return self._hook_config("user_config", (address, name)) or self.config_list(name)

    def _hook_config(self, hook: str, args: tuple[Any, ...]) -> list[str] | None:
        # Config hooks answer synchronously, (OK, value, ...); they run outside any transaction.
        for registration in self.hooks.chains.get(hook, ()):
            answer = registration.function(None, *args)
            if isinstance(answer, tuple) and answer and answer[0] == OK:
                return [str(value) for value in answer[1:] if value is not None]
        return None

    def log(self, level: int, message: str, plugin: str | None = None, hook: str | None = None,
            failure: Failure | None = None, **_: Any) -> None:
        """Log through the ``logging`` hook, else Twisted's log when ``level <= loglevel``."""
        if self.hooks.chains.get("logging") and not self._logging:
            self._logging = True
            try:
                for registration in self.hooks.chains["logging"]:
                    registration.function(self.hooks.current, level, hook, plugin, message)
            finally:
                self._logging = False
            return
        if level <= self.loglevel:
            tag = f"[{plugin}] " if plugin else ""
            extra = {"log_failure": failure} if failure is not None else {}
            _LOGGER_LEVELS[min(max(level, 0), 7)]("{tag}{message}", tag=tag, message=message, **extra)

    def defer_to_thread(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        """Run blocking work on the engine's bounded thread pool."""
        if self._threadpool is None:
            self._threadpool = shared_threadpool()
        reactor: Any = self.clock
        if not hasattr(reactor, "callFromThread"):  # an injected Clock: results come back via the reactor
            from twisted.internet import reactor
        return deferToThreadPool(reactor, self._threadpool, function, *args, **kwargs)

    @property
    def resolver(self) -> Any:
        """The DNS resolver facade (:class:`qptwisted.lib.dns.Resolver`), built on first use."""
        if getattr(self, "_resolver", None) is None:
            from qptwisted.lib.dns import Resolver

            self._resolver = Resolver.from_config(self)
        return self._resolver

    @resolver.setter
    def resolver(self, resolver: Any) -> None:
        self._resolver = resolver

    def describe(self) -> str:
        """One line for the start-up log."""
        names = ", ".join(plugin.plugin_name for plugin in self.plugins)
        return f"qptwisted engine for {self.me}: {len(self.plugins)} plugins ({names})"


_pool: ThreadPool | None = None


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


def shared_threadpool(size: int = 10) -> ThreadPool:
    """The process-wide bounded pool for blocking plugin work, started on first use."""
    global _pool
    if _pool is None:
        from twisted.internet import reactor

        _pool = ThreadPool(minthreads=0, maxthreads=size, name="qptwisted")
        # Daemon workers: a process whose reactor never shuts down (a test run, an
        # embedding script) must still be able to exit; twistd stops the pool at shutdown.
        _pool.threadFactory = _daemon_thread  # type: ignore[assignment]
        _pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", _pool.stop)  # type: ignore[attr-defined]
    return _pool


__all__ = ["Engine", "ConfigError", "LogLevel", "LOGINFO", "shared_threadpool"]
