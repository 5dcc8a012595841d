"""The interfaces of qptwisted (zope.interface)."""

from __future__ import annotations

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
    """A loaded plugin instance."""

    plugin_name = Attribute("The instance's name (``name`` or ``name:N``).")

    def register(*args: str) -> None:
        """Called once after loading with the arguments of the config/plugins line."""
