"""The interfaces of qptwisted (zope.interface)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from zope.interface import Attribute, Interface


class IQPPluginFactory(Interface):
    """Something that makes plugins: in practice a :class:`qptwisted.Plugin` subclass.

    Found with :func:`twisted.plugin.getPlugins` in the ``qpplugins`` package,
    in ``twisted.plugins`` dropins and in the directories of ``config/plugin_dirs``.
    """

    name = Attribute("The name used in config/plugins, e.g. 'queue/maildir'.")

    def __call__(engine: object, args: tuple[str, ...], instance: str | None) -> IQPPlugin:
        """Make one plugin instance with the arguments of its config/plugins line."""


class IQPPlugin(Interface):
    """A loaded plugin instance (:class:`qptwisted.Plugin` provides it)."""

    name = Attribute("The plugin's name, e.g. 'queue/maildir'.")
    plugin_name = Attribute("The instance's name (``name`` or ``name:N``).")
    engine = Attribute("The engine the plugin is loaded into.")
    args = Attribute("The words of its config/plugins line after the name.")
    source = Attribute("The file it was loaded from.")

    def configure(words: Sequence[str] | None = None) -> None:
        """Parse the declared arguments of ``words`` (default: the line's); once, before :meth:`register`."""

    def register(*args: str) -> None:
        """Called once after loading with the arguments of the config/plugins line."""

    def register_hook(hook: str, method: Callable[..., Any], unshift: bool = False) -> None:
        """Put ``method`` on ``hook``'s chain."""

    def close() -> object:
        """Release what the plugin holds; may return a Deferred."""


class IConnectionControl(Interface):
    """What a plugin may do to its connection, through :class:`qptwisted.Connection`.

    The SMTP session implements it; plugins never touch the session or the
    socket. A plugin that answers a command itself (and returns ``DONE``)
    calls :meth:`respond`.
    """

    def respond(code: int, message: str, enhanced: str | None = "") -> None:
        """Send a reply now (``enhanced=""`` picks x.0.0 from the code, None sends none)."""

    def disconnect() -> None:
        """Close the connection once the replies are written."""

    def start_tls(context: object, implicit: bool = False) -> None:
        """Switch to TLS (STARTTLS answers 220 first; ``implicit`` for SMTPS says nothing)."""


class ISMTPAuthenticatedUser(Interface):
    """The avatar interface ``auth/cred`` asks a portal for: an SMTP AUTH login."""
