"""``qpsmtpd check``: load the configuration and every plugin as a start would, and show the chain.

The equivalent of ``postfix check`` and ``haraka -o``. It builds the engine
exactly as the server does (``config/logging``, then ``config/plugins``, every
plugin's arguments and config files, every hook signature), prints which
plugin answers which hook, in order, and closes the engine again. Any error
is one line naming the file, the line and the plugin, and the exit status is
1, so a systemd unit runs it before a reload::

    ExecReload=/usr/bin/qpsmtpd check --quiet --config /etc/qpsmtpd
    ExecReload=/bin/kill -HUP $MAINPID

``--port`` endpoints (the same syntax as the server's) are parsed too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from qptwisted.core.hooks import HOOKS


def describe_chain(engine: Any) -> list[str]:
    """One block per hook that has plugins, in the order hooks fire in a session."""
    lines: list[str] = []
    for name in HOOKS:
        chain = engine.hooks.chains.get(name)
        if not chain:
            continue
        lines.append(f"{name}:")
        for number, registration in enumerate(chain, 1):
            method = getattr(registration.function, "__name__", "")
            how = "" if method == f"hook_{name}" else f" ({method})"
            extra = " fail-open" if registration.fail_open else ""
            lines.append(f"  {number}. {registration.plugin}{how}  timeout {registration.timeout:g}s{extra}")
    return lines


def _check_endpoint(description: str) -> None:
    """Raise ValueError when ``description`` is not an endpoint string the server can listen on."""
    from twisted.internet import endpoints, reactor

    kind = description.split(":", 1)[0].lower()
    if kind == "systemd":
        return  # needs the inherited descriptors, which only systemd hands over
    try:
        endpoints.serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--port {description!r}: {err}") from None


def check(argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``qpsmtpd check [--config DIR] [--quiet] [--port ENDPOINT ...]``; 0 when all is well."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(prog="qpsmtpd check", description="Load the configuration and every "
                                     "plugin as a start would; print the plugin chain hook by hook.")
    parser.add_argument("--config", "-c", default=None, help="config directory (default as the server: "
                        "./config, else the sample)")
    parser.add_argument("--port", "-p", action="append", default=[], help="also check this endpoint string")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing unless there is an error")
    options = parser.parse_args(list(argv))

    from twisted.internet.task import Clock

    from qptwisted.core.config import ConfigError, default_config_dir
    from qptwisted.core.engine import Engine

    try:
        directory = options.config or default_config_dir()
        if not os.path.isfile(os.path.join(directory, "plugins")):
            raise ConfigError(f"{os.path.abspath(directory)} has no plugins file: not a config directory")
        for description in options.port:
            _check_endpoint(description)
        # a Clock: periodic work plugins set up at load never runs, and nothing is left scheduled
        engine = Engine.from_config(directory, Clock())
    except ConfigError as error:
        print(f"qpsmtpd check: {error}", file=err)
        return 1
    except ValueError as error:
        print(f"qpsmtpd check: {error}", file=err)
        return 1
    try:
        if not options.quiet:
            settings = engine.settings
            print(f"config {engine.config.directory}: me {settings.me}, {len(engine.plugins)} plugins",
                  file=out)
            for line in describe_chain(engine):
                print(line, file=out)
            print("configuration OK", file=out)
    finally:
        engine.close()
    return 0


__all__ = ["check", "describe_chain"]
