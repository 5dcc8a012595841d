"""``qpsmtpd log-summary``: per plugin, how many connections and messages it refused.

qpsmtpd's ``log2sql``/``summarize`` idea, for the JSON logs.

Reads the logs of ``logging/json`` (one JSON object a line; plain files or
``.gz``, or ``-`` for standard input) and counts, per plugin, the refusal
lines (``"event": "deny"``): refusals in all, the connections it refused
before MAIL (``connection`` stage) and the messages it refused after MAIL
(``message`` stage; several refused recipients of one transaction count
once, two refused MAIL commands count twice). A connection or message
refused by two plugins counts for each. The last line says how many
connections left a line in the logs and how many messages were queued::

    qpsmtpd log-summary log/qpsmtpd-*.json
    plugin                   connections  messages  refusals  temporary
    dnsbl                            812         0       812          0
    greylisting                        0       311       344        344
    ...
    2041 connections, 655 messages queued

``--json`` prints the same numbers as one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any


@dataclass
class PluginCounts:
    """What one plugin refused."""

    connections: int = 0
    messages: int = 0
    refusals: int = 0
    temporary: int = 0


@dataclass
class Summary:
    """The counts of a set of log lines."""

    plugins: dict[str, PluginCounts] = field(default_factory=dict)
    connections: int = 0
    queued: int = 0
    unreadable: int = 0


def summarize(lines: Iterable[str]) -> Summary:
    """Count the refusals in ``logging/json`` lines (lines that are not JSON objects are skipped)."""
    summary = Summary()
    seen: set[tuple[Any, ...]] = set()
    connections: set[Any] = set()
    counts: dict[str, PluginCounts] = defaultdict(PluginCounts)
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            summary.unreadable += 1
            continue
        if not isinstance(event, dict):
            summary.unreadable += 1
            continue
        conn = (event.get("pid"), event.get("conn")) if event.get("conn") is not None else None
        if conn is not None:
            connections.add(conn)
        if event.get("event") != "deny":
            if event.get("msg", "").startswith("queued message from") and not event.get("plugin"):
                summary.queued += 1
            continue
        plugin = str(event.get("plugin") or "(engine)")
        count = counts[plugin]
        count.refusals += 1
        if str(event.get("code", "")).startswith("DENYSOFT"):
            count.temporary += 1
        if event.get("stage") == "message":
            key: tuple[Any, ...] = ("message", plugin, conn, event.get("txn"))
        else:
            key = ("connection", plugin, conn)
        if conn is None or key not in seen:
            seen.add(key)
            if key[0] == "message":
                count.messages += 1
            else:
                count.connections += 1
    summary.plugins = dict(sorted(counts.items(), key=lambda item: (-item[1].refusals, item[0])))
    summary.connections = len(connections)
    return summary


def _open(name: str) -> IO[str]:
    if name == "-":
        return sys.stdin
    if name.endswith(".gz"):
        return gzip.open(name, "rt", encoding="utf-8", errors="replace")
    return open(name, encoding="utf-8", errors="replace")  # noqa: SIM115


def _lines(names: Sequence[str]) -> Iterator[str]:
    for name in names:
        handle = _open(name)
        try:
            yield from handle
        finally:
            if handle is not sys.stdin:
                handle.close()


def render(summary: Summary) -> str:
    """The table."""
    width = max([len("plugin"), *(len(name) for name in summary.plugins)])
    lines = [f"{'plugin':<{width}}  connections  messages  refusals  temporary"]
    for name, count in summary.plugins.items():
        lines.append(f"{name:<{width}}  {count.connections:>11}  {count.messages:>8}  {count.refusals:>8}  "
                     f"{count.temporary:>9}")
    lines.append(f"{summary.connections} connections, {summary.queued} messages queued")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """``qpsmtpd log-summary FILE...``; the exit status."""
    parser = argparse.ArgumentParser(prog="qpsmtpd log-summary",
                                     description="Per plugin, what it refused, from logging/json logs.")
    parser.add_argument("files", nargs="+", help="JSON log files (.gz too; - for standard input)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    options = parser.parse_args(list(argv))
    try:
        summary = summarize(_lines(options.files))
    except OSError as err:
        print(f"qpsmtpd log-summary: {err}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(summary), indent=1) if options.json else render(summary))
    return 0
