"""The tools beside the daemon: ``qpsmtpd karma``, ``qpsmtpd greylist`` and ``qpsmtpd log-summary``.

The store tools are tested against the stores the plugins really use
(SQLite, and a private redis-server), round trip: what a tool writes, the
plugin acts on, and what the plugin wrote, the tool shows.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import DECLINED, DENY_DISCONNECT, DENYSOFT, Address, Engine
from qptwisted.service.cli import main
from qptwisted.testing import (
    SMTPDialogue,
    make_connection,
    make_engine,
    make_transaction,
    run_hook,
    write_config,
)
from tests.plugins.test_greylisting import start_redis


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exit:
            status = exit.code
    return status, out.getvalue(), err.getvalue()


def wall_clock() -> Clock:
    clock = Clock()
    clock.advance(time.time())
    return clock


class StoreToolMixin:
    """The tests of both stores; ``store`` is the plugin line's store argument."""

    store = ""

    def setUp(self) -> None:
        self.config = Path(self.mktemp()).resolve()  # type: ignore[attr-defined]
        self.data = self.config.parent / "data"
        self.data.mkdir(parents=True)
        write_config(self.config, {"plugins": [f"karma {self.store or f'db_dir {self.data}'}",
                                               f"greylisting {self.store or f'db_dir {self.data}'}"]})

    def engine(self, name: str, *more: str, config: dict[str, Any] | None = None) -> Engine:
        lines = (self.config / "plugins").read_text().splitlines()
        engine = make_engine([next(line for line in lines if line.startswith(name)), *more], config=config,
                             clock=wall_clock())
        self.addCleanup(engine.close)  # type: ignore[attr-defined]
        return engine

    def tool(self, *argv: str) -> tuple[int, str, str]:
        return run(argv[0], "--config", str(self.config), *argv[1:])

    def test_karma_capture_is_obeyed_by_the_plugin(self) -> None:
        status, out, _ = self.tool("karma", "capture", "192.0.2.7")
        self.assertEqual(status, 0, out)
        self.assertIn("penalty box until", out)
        engine = self.engine("karma")
        txn = make_transaction(engine, connection=make_connection(remote_ip="192.0.2.7"))
        self.assertEqual(self.successResultOf(run_hook(engine, "connect", txn)).code,  # type: ignore[attr-defined]
                         DENY_DISCONNECT)
        self.tool("karma", "release", "192.0.2.7")
        txn = make_transaction(engine, connection=make_connection(remote_ip="192.0.2.7"))
        self.assertEqual(self.successResultOf(run_hook(engine, "connect", txn)).code,  # type: ignore[attr-defined]
                         DECLINED)

    def test_karma_list_show_set_delete(self) -> None:
        engine = self.engine("karma", "badmailfrom", config={"badmailfrom": "spam@bad.test"})
        smtp = SMTPDialogue(engine, remote_ip="198.51.100.4")
        smtp.send("EHLO a.test")
        smtp.send("MAIL FROM:<spam@bad.test>")  # refused by a plugin: a naughty connection
        smtp.close()
        status, out, _ = self.tool("karma", "list")
        self.assertEqual(status, 0)
        self.assertRegex(out, r"198\.51\.100\.4 +score +-1 +naughty +1 +nice +0 +connections +1")
        self.assertEqual(self.tool("karma", "set", "198.51.100.4", "5")[0], 0)
        self.assertRegex(self.tool("karma", "show", "198.51.100.4")[1], r"score +5 +naughty +0 +nice +5")
        self.assertEqual(self.tool("karma", "delete", "198.51.100.4")[0], 0)
        status, out, _ = self.tool("karma", "show", "198.51.100.4")
        self.assertEqual((status, out.strip()), (1, "198.51.100.4: no history"))
        self.assertEqual(self.tool("karma", "show", "not-an-ip")[0], 2)

    def test_greylist_list_whitelist_remove(self) -> None:
        engine = self.engine("greylisting")

        def mail() -> Any:
            txn = make_transaction(engine, connection=make_connection(remote_ip="203.0.113.9"))
            return self.successResultOf(run_hook(engine, "mail", txn,  # type: ignore[attr-defined]
                                                 Address.parse("<a@example.org>"))).code

        self.assertEqual(mail(), DENYSOFT)
        status, out, _ = self.tool("greylist", "list")
        self.assertEqual(status, 0)
        self.assertRegex(out, r"grey +203\.0\.113\.9 \* \* +until .* refused 1 +passed 0")
        self.assertIn("whitelisted until", self.tool("greylist", "whitelist", "203.0.113.9")[1])
        self.assertEqual(mail(), DECLINED)
        self.assertRegex(self.tool("greylist", "list")[1], r"client +203\.0\.113\.9")
        self.assertEqual(self.tool("greylist", "remove", "203.0.113.9")[0], 0)
        self.assertEqual(mail(), DENYSOFT)  # grey again: too early
        self.assertEqual(self.tool("greylist", "remove", "203.0.113.9")[0], 1)


class SQLiteStoreToolTests(StoreToolMixin, unittest.TestCase):
    def test_line_option_and_bad_line(self) -> None:
        other = self.data / "other"
        status, out, _ = run("karma", "--config", str(self.config), "--line", f"karma db_dir {other}", "set",
                             "192.0.2.1", "-2")
        self.assertEqual(status, 0, out)
        self.assertTrue((other / "karma.sqlite").exists())
        status, _, err = run("karma", "--config", str(self.config), "--line", "greylisting", "list")
        self.assertEqual(status, 2)
        self.assertIn("--line must load karma", err)


class RedisStoreToolTests(StoreToolMixin, unittest.TestCase):
    def setUp(self) -> None:
        self.store = f"redis {start_redis(self)}"
        super().setUp()


class LogSummaryTests(unittest.TestCase):
    def test_counts_what_each_plugin_refused(self) -> None:
        log = Path(self.mktemp()).resolve()
        engine = make_engine(["badmailfrom", "rcpt_ok", "queue/discard"], config={
            "logging": f"logging/json loglevel 6 {log}", "badmailfrom": "spam@bad.test",
            "rcpthosts": "example.com", "loglevel": "6"})
        # one connection refused at MAIL twice (two messages tried), one with two refused recipients and an
        # accepted one (one message)
        smtp = SMTPDialogue(engine)
        smtp.send("EHLO a.test")
        smtp.send("MAIL FROM:<spam@bad.test>")
        smtp.send("MAIL FROM:<spam@bad.test>")
        smtp.close()
        smtp = SMTPDialogue(engine)
        recipients = ["<x@elsewhere.test>", "<y@elsewhere.test>", "<b@example.com>"]
        replies = smtp.deliver("<ok@good.test>", recipients, "Subject: hi\n\nhello\n")
        self.assertEqual(replies[-1].code, 250)
        smtp.close()
        engine.close()
        written = log.parent / log.name
        status, out, _ = run("log-summary", str(written))
        self.assertEqual(status, 0, out)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["plugin", "connections", "messages", "refusals", "temporary"])
        table = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
        self.assertEqual(table["badmailfrom"], ["0", "2", "2", "0"])
        self.assertEqual(table["rcpt_ok"], ["0", "1", "2", "0"])
        self.assertEqual(lines[-1], "2 connections, 1 messages queued")
        status, out, _ = run("log-summary", "--json", str(written))
        self.assertEqual(json.loads(out)["plugins"]["badmailfrom"]["refusals"], 2)

    def test_missing_file(self) -> None:
        status, _, err = run("log-summary", str(Path(self.mktemp())))
        self.assertEqual(status, 2)
        self.assertIn("No such file", err)
