"""``qpsmtpd karma``: inspect and edit the karma history (qpsmtpd's ``karma_tool``).

::

    qpsmtpd karma list                 every IP with its history, worst first
    qpsmtpd karma show IP              one IP
    qpsmtpd karma set IP N             set the IP's score (nice - naughty) to N
    qpsmtpd karma capture IP           put the IP into the penalty box now
    qpsmtpd karma release IP           let it out of the penalty box
    qpsmtpd karma delete IP            forget the IP

The store is the ``karma`` plugin's, found through its line in
``config/plugins`` (``--config DIR``) or given with ``--line``: SQLite or
Redis alike.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from qptwisted.lib.reputation import KARMA_TTL, History

from ._common import add_store_options, ip_argument, run_with_plugin, wait, when


def describe(ip: str, history: History, now: float, penalty: float) -> str:
    """One line of ``list``/``show``."""
    box = ""
    remaining = history.penalty_start + penalty - now
    if history.penalty_start and remaining > 0:
        box = f"  penalty box until {when(history.penalty_start + penalty)} UTC"
    return (f"{ip:<39} score {history.score:>5}  naughty {history.naughty:>4}  nice {history.nice:>4}  "
            f"connections {history.connects:>5}{box}")


def main(argv: Sequence[str]) -> int:
    """``qpsmtpd karma ...``; the exit status."""
    parser = argparse.ArgumentParser(prog="qpsmtpd karma", description="Inspect and edit the karma history.")
    add_store_options(parser, "karma")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every IP, worst first")
    for name, text in (("show", "one IP"), ("capture", "put an IP into the penalty box"),
                       ("release", "let an IP out of the penalty box"), ("delete", "forget an IP")):
        commands.add_parser(name, help=text).add_argument("ip", type=ip_argument)
    setter = commands.add_parser("set", help="set an IP's score (nice - naughty)")
    setter.add_argument("ip", type=ip_argument)
    setter.add_argument("score", type=int)
    return run_with_plugin(parser.parse_args(list(argv)), "qpsmtpd karma", "karma", _run)


def _run(options: argparse.Namespace, plugin: Any, now: float) -> int:
    store = plugin.store
    if options.command == "list":
        entries = [(key, History(value)) for key, value, _ in wait(store.items(now))]
        for ip, history in sorted(entries, key=lambda entry: (entry[1].score, entry[0])):
            print(describe(ip, history, now, plugin.penalty))
        return 0
    ip = options.ip
    value = wait(store.get(ip, now))
    if options.command == "delete":
        wait(store.delete(ip))
        print(f"{ip}: forgotten" if value is not None else f"{ip}: no history")
        return 0
    history = History(value)
    if options.command == "show":
        if value is None:
            print(f"{ip}: no history")
            return 1
        print(describe(ip, history, now, plugin.penalty))
        return 0
    if options.command == "set":
        history.naughty, history.nice = max(0, -options.score), max(0, options.score)
    elif options.command == "capture":
        history.penalty_start = now
    elif options.command == "release":
        history.penalty_start = 0
    wait(store.put(ip, str(history), now, KARMA_TTL))
    print(describe(ip, history, now, plugin.penalty))
    return 0
