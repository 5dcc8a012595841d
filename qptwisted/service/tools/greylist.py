"""``qpsmtpd greylist``: inspect the greylisting store and whitelist clients by hand.

::

    qpsmtpd greylist list              every triplet (grey or white) and every whitelisted client
    qpsmtpd greylist whitelist IP      let IP through greylisting (for white_timeout, or --days)
    qpsmtpd greylist remove IP         take IP off the hand-made whitelist

The store is the ``greylisting`` plugin's, found through its line in
``config/plugins`` (``--config DIR``) or given with ``--line``: SQLite or
Redis alike. Triplets are stored under a hash; the list shows what each
was made of (``IP <sender> <recipient>``, ``*`` for parts not in the key)
for triplets recorded since this version.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from qptwisted.lib.reputation import CLIENT_PREFIX, GreyRecord

from ._common import add_store_options, ip_argument, run_with_plugin, wait, when


def main(argv: Sequence[str]) -> int:
    """``qpsmtpd greylist ...``; the exit status."""
    parser = argparse.ArgumentParser(prog="qpsmtpd greylist",
                                     description="Inspect the greylisting store; whitelist clients.")
    add_store_options(parser, "greylisting")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every triplet and whitelisted client")
    white = commands.add_parser("whitelist", help="let a client through greylisting")
    white.add_argument("ip", type=ip_argument)
    white.add_argument("--days", type=float, help="for how long (default: the plugin's white_timeout)")
    remove = commands.add_parser("remove", help="take a client off the hand-made whitelist")
    remove.add_argument("ip", type=ip_argument)
    return run_with_plugin(parser.parse_args(list(argv)), "qpsmtpd greylist", "greylisting", _run)


def _run(options: argparse.Namespace, plugin: Any, now: float) -> int:
    store = plugin.store
    if options.command == "whitelist":
        ttl = options.days * 86400 if options.days else plugin.white
        wait(store.put(CLIENT_PREFIX + options.ip, "qpsmtpd greylist whitelist", now, ttl))
        print(f"{options.ip}: whitelisted until {when(now + ttl)} UTC")
        return 0
    if options.command == "remove":
        key = CLIENT_PREFIX + options.ip
        known = wait(store.get(key, now)) is not None
        wait(store.delete(key))
        print(f"{options.ip}: removed" if known else f"{options.ip}: was not whitelisted")
        return 0 if known else 1
    for key, value, expires in wait(store.items(now)):
        if key.startswith(CLIENT_PREFIX):
            print(f"client  {key[len(CLIENT_PREFIX):]:<60} until {when(expires)}")
            continue
        try:
            record = GreyRecord.parse(value)
        except ValueError:
            continue
        state = "white" if record.passed else "grey"
        print(f"{state:<7} {record.label or key:<60} until {when(expires)}  seen {when(record.first)}  "
              f"refused {record.blocked}  passed {record.passed}")
    return 0
