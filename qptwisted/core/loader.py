"""Finding plugins by name, and reading ``config/plugins`` lines.

Searched in this order, first match wins (qpsmtpd's order: the postmaster's
own directories before the stock plugins):

1. the directories of ``config/plugin_dirs``, in order: plugin ``NAME`` is the
   file ``DIR/NAME.py`` (``queue/maildir-domain`` may also be
   ``queue/maildir_domain.py``); only the files a ``plugins`` line names are
   imported;
2. the stock plugins (the ``qpplugins`` package) and third-party dropins in
   ``twisted.plugins``, found with :func:`twisted.plugin.getPlugins`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from twisted.logger import ILogObserver, globalLogPublisher
from twisted.plugin import getPlugins
from zope.interface import implementer

from qptwisted.core.config import ConfigError
from qptwisted.interfaces import IQPPluginFactory


class PluginLine(NamedTuple):
    """One ``config/plugins`` line: plugin name, instance name (``name:N``), arguments."""

    name: str
    instance: str
    args: tuple[str, ...]


def parse_plugin_line(line: str, where: str = "") -> PluginLine:
    """``name[:N] args...`` -> :class:`PluginLine`."""
    if not line.isprintable():
        raise ConfigError(f"non-printable character in plugin line {line!r} {where}".rstrip())
    instance, *args = line.split()
    name = instance.split(":", 1)[0]
    return PluginLine(name, instance, tuple(args))


def _packages() -> Iterator[ModuleType]:
    import qpplugins
    import twisted.plugins

    yield qpplugins
    for info in pkgutil.walk_packages(qpplugins.__path__, "qpplugins."):
        if info.ispkg:
            yield importlib.import_module(info.name)
    yield twisted.plugins


class PluginIndex:
    """Plugin factories by name, from ``plugin_dirs`` first, then stock plugins and dropins."""

    def __init__(self, plugin_dirs: Iterable[Path] = ()) -> None:
        self.plugin_dirs = list(plugin_dirs)
        self._stock: dict[str, Any] | None = None
        self._errors: list[str] = []
        self._found: dict[str, tuple[Any, str]] = {}

    def find(self, name: str, where: str = "") -> Any:
        """The factory of plugin ``name``; :class:`ConfigError` that says where it was looked for."""
        hit = self._found.get(name)
        if hit is None:
            hit = self._from_directories(name) or self._from_packages(name)
            if hit is None:
                searched = [str(d) for d in self.plugin_dirs] + ["the stock plugins (qpplugins)",
                                                                  "twisted.plugins dropins"]
                hint = "; import errors: " + "; ".join(self._errors) if self._errors else ""
                raise ConfigError(" ".join(filter(None, (
                    f"plugin {name!r} not found in {', '.join(searched)}", where))) + hint)
            self._found[name] = hit
        return hit[0]

    @property
    def errors(self) -> list[str]:
        """Import errors met while discovering the stock plugins and dropins."""
        self.stock()
        return list(self._errors)

    def origin(self, name: str) -> str:
        """The file plugin ``name`` was loaded from."""
        hit = self._found.get(name)
        return hit[1] if hit else ""

    def stock(self) -> dict[str, Any]:
        """Every stock and dropin plugin factory by name."""
        if self._stock is None:
            self._stock = {}

            @implementer(ILogObserver)
            def observe(event: dict[str, Any]) -> None:
                # getPlugins logs through the legacy API: its events carry "failure"
                failure = event.get("log_failure") or event.get("failure")
                if failure is not None:
                    where = _failed_module(failure)
                    self._errors.append(f"{where + ': ' if where else ''}{failure.type.__name__}: "
                                        f"{failure.getErrorMessage()}")

            globalLogPublisher.addObserver(observe)
            try:
                for package in _packages():
                    for factory in getPlugins(IQPPluginFactory, package):
                        factory_name = getattr(factory, "name", "")
                        if factory_name:
                            self._stock.setdefault(factory_name, factory)
            finally:
                globalLogPublisher.removeObserver(observe)
        return self._stock

    def _from_packages(self, name: str) -> tuple[Any, str] | None:
        factory = self.stock().get(name)
        if factory is None:
            return None
        return factory, inspect.getsourcefile(factory) or str(getattr(factory, "__module__", ""))

    def _from_directories(self, name: str) -> tuple[Any, str] | None:
        for directory in self.plugin_dirs:
            for candidate in dict.fromkeys((name, name.replace("-", "_"))):
                path = directory / f"{candidate}.py"
                if path.is_file():
                    return self._import(path, directory, name), str(path)
        return None

    def _import(self, path: Path, directory: Path, name: str) -> Any:
        module_name = "qpplugins_dir_" + "_".join(path.relative_to(directory).with_suffix("").parts)
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except Exception as err:
            raise ConfigError(f"plugin {name!r}: {path} cannot be imported: {type(err).__name__}: {err}") \
                from err
        factories = [value for _, value in inspect.getmembers(module) if IQPPluginFactory.providedBy(value)]
        named = [factory for factory in factories if getattr(factory, "name", "") == name]
        own = [factory for factory in factories if getattr(factory, "__module__", None) == module_name]
        if named or len(own) == 1:
            return (named or own)[0]
        raise ConfigError(f"plugin {name!r}: {path} defines no plugin named {name!r} "
                          f"(found: {', '.join(getattr(f, 'name', '?') for f in factories) or 'none'})")


def _failed_module(failure: Any) -> str:
    """The plugin module a failed dropin import came from (getPlugins does not say)."""
    filename = getattr(failure.value, "filename", None)
    if isinstance(failure.value, SyntaxError) and filename:
        return str(filename)
    for frame in failure.frames:
        function, filename = frame[0], frame[1]
        if function == "<module>" and not filename.startswith("<"):
            return str(filename)
    return ""


def discover(plugin_dirs: Iterable[Path] = ()) -> PluginIndex:
    """A :class:`PluginIndex` over ``plugin_dirs`` and the installed plugins."""
    return PluginIndex(plugin_dirs)
