"""What the store tools share: the plugin's own store, opened outside the server.

A tool loads the plugin exactly as the server would (its line in
``config/plugins``, or one given with ``--line``) into a bare engine whose
blocking calls run inline and whose clock reads the wall time, so the
plugin opens the same SQLite file or Redis database with the same settings,
and the tool reads and writes it through the plugin's own store object.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from qptwisted.core.config import Config, ConfigError, default_config_dir
from qptwisted.core.engine import Engine
from qptwisted.core.loader import parse_plugin_line


class _Inline:
    """A thread pool stand-in: the engine runs blocking work at once, in this thread."""

    inline = True


def add_store_options(parser: argparse.ArgumentParser, plugin: str) -> None:
    """``--config DIR`` and ``--line LINE``."""
    parser.add_argument("--config", "-c", help="the server's config directory (default ./config, else the "
                        "sample)")
    parser.add_argument("--line", help=f"the {plugin} plugin line to use instead of the one in "
                        f"config/plugins, e.g. '{plugin} redis redis://127.0.0.1:6379/0'")


def plugin_line(config: Config, name: str) -> str:
    """The first line of ``config/plugins`` that loads ``name`` (the bare name when none does)."""
    for number, line in enumerate(config.get_list("plugins"), 1):
        if parse_plugin_line(line, f"config/plugins line {number}").name == name:
            return line
    return name


def load_plugin(options: argparse.Namespace, name: str) -> tuple[Engine, Any]:
    """A bare engine and the plugin ``name`` loaded into it (raises ConfigError)."""
    config = Config(options.config or default_config_dir())
    clock = Clock()
    clock.advance(time.time())
    engine = Engine(config, clock=clock, threadpool=_Inline())  # type: ignore[arg-type]
    line = options.line or plugin_line(config, name)
    if parse_plugin_line(line, "--line").name != name:
        raise ConfigError(f"--line must load {name}, not {line!r}")
    return engine, engine.load(line)


def ip_argument(text: str) -> str:
    """An argparse type: an IP address in its normal form."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def run_with_plugin(options: argparse.Namespace, prog: str, name: str,
                    run: Callable[[argparse.Namespace, Any, float], int]) -> int:
    """``run(options, plugin, now)`` with the plugin ``name`` loaded; 2 on a config error."""
    try:
        engine, plugin = load_plugin(options, name)
    except ConfigError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    try:
        return run(options, plugin, float(engine.clock.seconds()))
    finally:
        wait(engine.close())


def wait(deferred: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (the tools run everything inline)."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    if not results:
        raise RuntimeError("the store did not answer inline")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def when(stamp: float) -> str:
    """A Unix time as ``2026-01-02 03:04:05`` (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))
