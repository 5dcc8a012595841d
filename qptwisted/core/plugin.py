"""The :class:`Plugin` base class: everything a plugin needs, and nothing more."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.plugin import IPlugin
from zope.interface import alsoProvides, implementer

from qptwisted.core.arguments import Argument, arg, declared, parse_arguments
from qptwisted.core.groups import group_config_list, groups_in_use
from qptwisted.interfaces import IQPPlugin, IQPPluginFactory

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine
    from qptwisted.mail.address import Address
    from qptwisted.mail.transaction import Transaction

_T = TypeVar("_T")


@implementer(IQPPlugin)
class Plugin:
    """Base class of every plugin.

    Set ``name``, declare arguments (``wait = arg.duration(1, "...")``) and
    write ``hook_<hook>(self, transaction, ...)`` methods; each registers
    itself on its hook. A hook returns ``DECLINED`` (or ``None``), a
    :class:`~qptwisted.core.codes.Code`, ``(Code, "message")``, a Deferred of
    those, or is an ``async def``. Override :meth:`register` for set-up that
    needs the parsed arguments and the config files; override :meth:`close`
    to release what the plugin holds.

    A subclass that sets ``name`` provides ``IPlugin`` and ``IQPPluginFactory``
    by itself, so ``twisted.plugin.getPlugins`` finds it without a decorator.
    """

    name: ClassVar[str] = ""
    #: seconds an asynchronous hook may take before the chain answers DENYSOFT
    timeout: ClassVar[float | None] = None
    #: parse the line even when no argument is declared, so a plugin that takes none refuses every word
    strict_arguments: ClassVar[bool] = False
    #: an advisory plugin: when one of its hooks breaks, the chain goes on instead of answering 451
    fail_open: bool = arg.bool(False, "when a hook of this plugin breaks, skip it instead of deferring "
                               "the command (for advisory plugins only)")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            alsoProvides(cls, IPlugin, IQPPluginFactory)

    def __init__(self, engine: Engine, args: tuple[str, ...] = (), instance: str | None = None) -> None:
        self.engine = engine
        self.args = tuple(args)
        self.plugin_name = instance or self.name
        #: the file the plugin was loaded from (the start-up log names it)
        self.source = ""

    def configure(self, words: Sequence[str] | None = None) -> None:
        """Parse the declared arguments (the engine calls this once, before :meth:`register`).

        ``words`` replaces the line's words: a plugin with an old syntax of
        its own overrides this, rewrites its words and calls up with them. A plugin
        that declares nothing but ``fail_open`` gets its words unparsed in
        :meth:`register` (the 0.1 way), unless it sets :attr:`strict_arguments`.
        """
        if self.strict_arguments or len(declared(type(self))) > 1:
            self._arguments: dict[str, Any] = parse_arguments(self, self.args if words is None else words)

    def register(self, *args: str) -> None:
        """Set up after the arguments were parsed: read config files, register more hooks."""

    def close(self) -> Deferred[None] | None:
        """Release what the plugin holds (connections, files, timers); may return a Deferred.

        Called once when the engine goes away: at a reload after its last
        connection ended, and when the server stops.
        """
        return None

    def register_hook(self, hook: str, method: Callable[..., Any], unshift: bool = False) -> None:
        """Register ``method`` on ``hook`` (``unshift`` puts it first in the chain)."""
        timeout = self.timeout if self.timeout is not None else self.engine.settings.plugin_timeout
        self.engine.hooks.register(hook, self.plugin_name, method, timeout, unshift, bool(self.fail_open))

    def config(self, name: str, default: str | None = None) -> str | None:
        """The first value of config file ``name`` (through the ``config`` hook)."""
        values = self.engine.config_list(name)
        return values[0] if values else default

    def config_list(self, name: str) -> list[str]:
        """Every value of config file ``name``."""
        return self.engine.config_list(name)

    @property
    def policy_groups(self) -> bool:
        """True when recipients may belong to policy groups (``config/policy_groups`` or a plugin)."""
        return groups_in_use(self.engine)

    def group_config(self, transaction: Transaction, name: str, default: str | None = None,
                     rcpt: Address | None = None) -> str | None:
        """The first value of config file ``name`` for the policy group of ``transaction`` (or ``rcpt``)."""
        values = self.group_config_list(transaction, name, rcpt)
        return values[0] if values else default

    def group_config_list(self, transaction: Transaction, name: str,
                          rcpt: Address | None = None) -> list[str]:
        """Every value of ``name`` for the policy group: ``config/groups/<group>/<name>``, else global.

        The group is the transaction's (fixed by its first accepted
        recipient), or ``rcpt``'s while that recipient is being decided at
        RCPT. See ``docs/esmtp.md``.
        """
        group = rcpt.policy_group if rcpt is not None else transaction.policy_group
        return group_config_list(self.engine, group, name)

    def log(self, level: int, *message: object) -> None:
        """Log at ``level`` (a :class:`~qptwisted.core.codes.LogLevel`), tagged with this plugin."""
        self.engine.log(level, " ".join(str(part) for part in message), plugin=self.plugin_name)

    def defer_to_thread(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        """Run a blocking call on the engine's bounded thread pool."""
        return self.engine.defer_to_thread(function, *args, **kwargs)

    @property
    def clock(self) -> IReactorTime:
        """The engine's clock (``IReactorTime``); use it for every timer."""
        return self.engine.clock

    @property
    def me(self) -> str:
        """This server's name (config ``me``)."""
        return self.engine.settings.me


__all__ = ["Plugin", "Argument", "arg"]
