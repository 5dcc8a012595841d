"""The :class:`Plugin` base class: everything a plugin needs, and nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import alsoProvides, implementer

from qptwisted.core.interfaces import IQPPlugin, IQPPluginFactory

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine

_T = TypeVar("_T")


@implementer(IQPPlugin)
class Plugin:
    """Base class of every plugin.

    Set ``name`` and write ``hook_<hook>(self, transaction, ...)`` methods; each
    registers itself on its hook. A hook returns ``DECLINED`` (or ``None``), a
    :class:`~qptwisted.core.codes.Code`, ``(Code, "message")``, a Deferred of those,
    or is an ``async def``. Override :meth:`register` to read the arguments of
    the ``config/plugins`` line or to register more hooks.

    A subclass that sets ``name`` provides ``IPlugin`` and ``IQPPluginFactory``
    by itself, so ``twisted.plugin.getPlugins`` finds it without a decorator.
    """

    name: ClassVar[str] = ""
    #: seconds an asynchronous hook may take before the chain answers DENYSOFT
    timeout: ClassVar[float | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            alsoProvides(cls, IPlugin, IQPPluginFactory)

    def __init__(self, engine: Engine, args: tuple[str, ...] = (), instance: str | None = None) -> None:
        self.engine = engine
        self.args = tuple(args)
        self.plugin_name = instance or self.name

    def register(self, *args: str) -> None:
        """Read the plugin's arguments; the default accepts none beyond ``loglevel``."""

    def register_hook(self, hook: str, method: Callable[..., Any], unshift: bool = False) -> None:
        """Register ``method`` on ``hook`` (``unshift`` puts it first in the chain)."""
        timeout = self.timeout if self.timeout is not None else self.engine.plugin_timeout
        self.engine.hooks.register(hook, self.plugin_name, method, timeout, unshift)

    def config(self, name: str, default: str | None = None) -> str | None:
        """The first value of config file ``name`` (through the ``config`` hook)."""
        values = self.engine.config_list(name)
        return values[0] if values else default

    def config_list(self, name: str) -> list[str]:
        """Every value of config file ``name``."""
        return self.engine.config_list(name)

    def log(self, level: int, *message: object) -> None:
        """Log at ``level`` (a :class:`~qptwisted.core.codes.LogLevel`), tagged with this plugin."""
        self.engine.log(level, " ".join(str(part) for part in message), plugin=self.plugin_name)

    def defer_to_thread(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        """Run a blocking call on the engine's bounded thread pool."""
        return self.engine.defer_to_thread(function, *args, **kwargs)

    @property
    def clock(self) -> Any:
        """The engine's clock (``IReactorTime``); use it for every timer."""
        return self.engine.clock
