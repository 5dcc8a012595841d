"""Finding plugins by name, and reading ``config/plugins`` lines.

Searched in this order, first match wins (qpsmtpd's order: the postmaster's
own directories before the stock plugins):

1. the directories of ``config/plugin_dirs``, in order: plugin ``NAME`` is the
   file ``DIR/NAME.py`` (``queue/maildir-domain`` may also be
   ``queue/maildir_domain.py``); only the files a ``plugins`` line names are
   imported;
2. qpsmtpd's old names and argument spellings (:mod:`qptwisted.core.aliases`):
   ``check_relay`` loads ``relay``, with the words of the line rewritten where
   they changed;
3. the stock plugins (the ``qpplugins`` package) and third-party dropins in
   ``twisted.plugins``, found with :func:`twisted.plugin.getPlugins`; ``-`` and
   ``_`` are the same in their names (``queue/qmail_queue`` is
   ``queue/qmail-queue``).

On a ``config/plugins`` line, a word that starts with ``#`` begins a comment
that runs to the end of the line (``rcpt_ok # the last rcpt plugin``).
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

from qptwisted.core.aliases import Alias, lookup
from qptwisted.core.config import ConfigError
from qptwisted.interfaces import IQPPluginFactory


class PluginLine(NamedTuple):
    """One ``config/plugins`` line: plugin name, instance name (``name:N``), arguments."""

    name: str
    instance: str
    args: tuple[str, ...]


    def text(self) -> str:
        """The line as ``config/plugins`` writes it."""
        return " ".join((self.instance, *self.args))


class Resolved(NamedTuple):
    """A plugin line resolved to the factory that loads it.

    ``line`` is what loads (for an old spelling: the new name, its instance
    name and the rewritten words); ``alias`` the entry of
    :mod:`qptwisted.core.aliases` that translated it, and ``changes`` what
    the translation did to the words (both empty when the line loads as it is).
    """

    factory: Any
    line: PluginLine
    alias: Alias | None = None
    changes: tuple[str, ...] = ()

    @property
    def translated(self) -> bool:
        """True when the line loads through an old name or old argument spellings."""
        return self.alias is not None and (self.alias.renamed or bool(self.changes))


def parse_plugin_line(line: str, where: str = "") -> PluginLine:
    """``name[:N] args... [# comment]`` -> :class:`PluginLine`."""
    if not line.isprintable():
        raise ConfigError(f"non-printable character in plugin line {line!r} {where}".rstrip())
    words = line.split()
    for index, word in enumerate(words):
        # qpsmtpd handed a trailing comment's words to the plugin, which mostly ignored them;
        # a plugin that declares its arguments would refuse them
        if word.startswith("#"):
            words = words[:index]
            break
    instance, *args = words
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
        self._own: dict[str, tuple[Any, str] | None] = {}

    def resolve(self, line: PluginLine, where: str = "") -> Resolved:
        """The factory of a ``config/plugins`` line, through the alias table where it applies."""
        if self._from_directories(line.name) is None:
            alias = lookup(line.name)
            if alias is not None:
                rewrite = alias.translate(line.args)
                new = PluginLine(alias.new, alias.new + line.instance[len(line.name):], rewrite.words)
                return Resolved(self.find(alias.new, where), new, alias, rewrite.changes)
        return Resolved(self.find(line.name, where), line)

    def find(self, name: str, where: str = "") -> Any:
        """The factory of plugin ``name``; :class:`ConfigError` that says where it was looked for.

        An old name of the alias table finds the plugin it stands for (its
        arguments are not rewritten here: :meth:`resolve` does that).
        """
        hit = self._found.get(name)
        if hit is None:
            hit = self._from_directories(name) or self._from_packages(name)
            alias = lookup(name)
            if hit is None and alias is not None and alias.renamed:
                hit = self._from_directories(alias.new) or self._from_packages(alias.new)
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
        stock = self.stock()
        factory = stock.get(name)
        if factory is None:
            # qpsmtpd's file names use "-", its package names "_" (queue/qmail-queue, queue::qmail_2dqueue)
            spelt = {key.replace("-", "_"): value for key, value in stock.items()}
            factory = spelt.get(name.replace("-", "_"))
        if factory is None:
            return None
        return factory, inspect.getsourcefile(factory) or str(getattr(factory, "__module__", ""))

    def _from_directories(self, name: str) -> tuple[Any, str] | None:
        if name in self._own:
            return self._own[name]
        files = ((directory, directory / f"{candidate}.py") for directory in self.plugin_dirs
                 for candidate in dict.fromkeys((name, name.replace("-", "_"))))
        found = next(((directory, path) for directory, path in files if path.is_file()), None)
        hit = None if found is None else (self._import(found[1], found[0], name), str(found[1]))
        self._own[name] = hit
        return hit

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
