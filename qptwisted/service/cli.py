"""The ``qpsmtpd`` command: run the server, or one of the tools beside it.

``qpsmtpd [twistd qpsmtpd options]`` runs the server in the foreground (the
same as ``twistd -n --pidfile= qpsmtpd``). A first word naming a tool runs
that tool instead::

    qpsmtpd help-plugin NAME      the plugin's summary and its arguments (also --help-plugin NAME)
    qpsmtpd new-plugin NAME       write NAME.py, a plugin to start from, and its test (--dir DIR)
    qpsmtpd karma list|show IP|set IP N|capture IP|release IP|delete IP
    qpsmtpd greylist list|whitelist IP|remove IP
    qpsmtpd log-summary FILE...   per plugin, what it refused (logging/json logs)
    qpsmtpd migrate DIR           how a qpsmtpd config directory loads here, line by line
    qpsmtpd check [--config DIR]  load the configuration and every plugin; print the chain
    qpsmtpd inetd [--config DIR]  serve one session on standard input/output (inetd, tcpserver)

Each tool is a function ``(argv) -> exit status`` in :data:`TOOLS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from qptwisted.service import tools
from qptwisted.service.migrate import migrate
from qptwisted.service.newplugin import new_plugin


def help_plugin(argv: Sequence[str]) -> int:
    """``qpsmtpd help-plugin NAME [--config DIR]``: what a plugin does and which arguments it takes."""
    parser = argparse.ArgumentParser(prog="qpsmtpd help-plugin",
                                     description="Show a plugin's summary and its arguments.")
    parser.add_argument("name", help="the plugin's name as config/plugins writes it, e.g. queue/maildir")
    parser.add_argument("--config", "-c", help="config directory (for its plugin_dirs)")
    options = parser.parse_args(list(argv))
    from qptwisted.core.arguments import help_text
    from qptwisted.core.config import Config, ConfigError
    from qptwisted.core.loader import discover

    try:
        directories = Config(options.config).plugin_dirs() if options.config else []
        factory = discover(directories).find(options.name.split(":", 1)[0])
    except ConfigError as err:
        print(f"qpsmtpd: {err}", file=sys.stderr)
        return 2
    print(help_text(factory))
    return 0


#: the tools, by the first word of the command line
TOOLS: dict[str, Callable[[Sequence[str]], int]] = {
    "help-plugin": help_plugin,
    "new-plugin": new_plugin,
    "karma": tools.karma,
    "greylist": tools.greylist,
    "log-summary": tools.log_summary,
    "migrate": migrate,
    "check": lambda argv: _tool("qptwisted.service.check", "check")(argv),
    "inetd": lambda argv: _tool("qptwisted.service.inetd", "main")(argv),
}


def _tool(module: str, name: str) -> Callable[[Sequence[str]], int]:
    """A tool's function, imported when it runs (the server's start stays lean)."""
    import importlib

    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> Any:
    """The ``qpsmtpd`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--help-plugin":
        args[0] = "help-plugin"
    tool = TOOLS.get(args[0]) if args else None
    if tool is not None:
        return tool(args[1:])
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "qpsmtpd", *args]
    return run()
