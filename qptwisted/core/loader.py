"""Plugin discovery (``twisted.plugin.getPlugins``) and the ``config/plugins`` file."""

from __future__ import annotations

import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.logger import ILogObserver, globalLogPublisher
from twisted.plugin import getPlugins
from zope.interface import implementer

from qptwisted.core.config import ConfigError
from qptwisted.core.interfaces import IQPPluginFactory


def _packages() -> Iterator[ModuleType]:
    import qpplugins
    import twisted.plugins

    yield qpplugins
    for info in pkgutil.walk_packages(qpplugins.__path__, "qpplugins."):
        if info.ispkg:
            yield importlib.import_module(info.name)
    yield twisted.plugins


def discover(plugin_dirs: Iterable[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """Every plugin factory by name, and the import errors met on the way.

    Searched: the ``qpplugins`` package and its sub-packages, Twisted's
    ``twisted.plugins`` dropins (third-party packages), and ``plugin_dirs``.
    """
    factories: dict[str, Any] = {}
    errors: list[str] = []

    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        # getPlugins logs through the legacy API: its events carry "failure"
        failure = event.get("log_failure") or event.get("failure")
        if failure is not None:
            where = _failed_module(failure)
            errors.append(f"{where + ': ' if where else ''}{failure.type.__name__}: "
                          f"{failure.getErrorMessage()}")

    globalLogPublisher.addObserver(observe)
    try:
        for package in _packages():
            for factory in getPlugins(IQPPluginFactory, package):
                _add(factories, factory)
    finally:
        globalLogPublisher.removeObserver(observe)
    for directory in plugin_dirs:
        for factory in _from_directory(Path(directory), errors):
            _add(factories, factory)
    return factories, errors


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


def _add(factories: dict[str, Any], factory: Any) -> None:
    name = getattr(factory, "name", "")
    if name and factories.get(name) is not factory:
        factories.setdefault(name, factory)


def _from_directory(directory: Path, errors: list[str]) -> Iterator[Any]:
    for path in sorted(directory.rglob("*.py")):
        module_name = "qpplugins_dir_" + "_".join(path.relative_to(directory).with_suffix("").parts)
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except Exception as err:
            errors.append(f"{path}: {type(err).__name__}: {err}")
            continue
        for _, value in inspect.getmembers(module):
            if IQPPluginFactory.providedBy(value):
                yield value


def parse_plugin_line(line: str) -> tuple[str, str, tuple[str, ...]]:
    """``name[:N] args...`` -> (plugin name, instance name, arguments)."""
    if not line.isprintable():
        raise ConfigError(f"non-printable character in plugin line {line!r}")
    instance, *args = line.split()
    name = instance.split(":", 1)[0]
    return name, instance, tuple(args)
