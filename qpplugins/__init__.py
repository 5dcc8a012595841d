"""The stock plugins of qptwisted, found with ``twisted.plugin.getPlugins``."""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # noqa: F821  (module __path__)
__all__: list[str] = []
