"""limit: concurrency, connection, message and recipient rates, per-connection counts; SQLite and Redis."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from qpplugins.limit import parse_rate
from qptwisted import ConfigError, HookAnswer, Plugin
from qptwisted.lib.counters import SQLiteCounters
from qptwisted.testing import CaptureQueue, SMTPDialogue, make_engine
from tests.plugins.test_greylisting import start_redis

MESSAGE = "Subject: limit\n\nhello\n"


class Logs(Plugin):
    """Logging: keep every line."""

    name = "test_limit_logs"
    lines: list[str] = []

    def hook_logging(self, transaction: Any, level: int, hook: Any, plugin: Any, message: str) -> HookAnswer:
        type(self).lines.append(message)
        return None


class RateSyntaxTests(unittest.TestCase):
    def test_rates(self) -> None:
        self.assertEqual(parse_rate("30/1m"), (30, 60.0))
        self.assertEqual(parse_rate("5/h"), (5, 3600.0))
        self.assertEqual(parse_rate("10/90s"), (10, 90.0))
        for bad in ("30", "x/1m", "3/0", "3/soon"):
            self.assertRaises(ValueError, parse_rate, bad)

    def test_bad_arguments_stop_the_start(self) -> None:
        self.assertRaises(ConfigError, make_engine, ["limit connections 30"])
        self.assertRaises(ConfigError, make_engine, ["limit concurrency -1"])


class CounterTests(unittest.TestCase):
    """The window arithmetic, on the embedded store."""

    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="counters-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.counters = SQLiteCounters(f"{directory}/c.sqlite", "t", self.run_now)
        self.addCleanup(self.counters.close)

    @staticmethod
    def run_now(function: Any, *args: Any, **kwargs: Any) -> Any:
        from twisted.internet.defer import maybeDeferred

        return maybeDeferred(function, *args, **kwargs)

    def hit(self, now: float, sliding: bool = True) -> float:
        return self.successResultOf(self.counters.hit("k", 60, now, 1, sliding))

    def test_sliding_window_weighs_the_previous_bucket(self) -> None:
        for _ in range(10):
            self.hit(600)  # bucket 10, at its start
        self.assertEqual(self.hit(660), 1 + 10 * 1.0)  # bucket 11, at its start: all of bucket 10 counts
        self.assertEqual(self.hit(690), 2 + 10 * 0.5)  # halfway: half of it
        self.assertEqual(self.hit(720), 1 + 2)  # bucket 12: bucket 10 is out, all of bucket 11 is in

    def test_fixed_window_counts_the_bucket_only(self) -> None:
        for _ in range(10):
            self.hit(600, sliding=False)
        self.assertEqual(self.hit(659, sliding=False), 11)
        self.assertEqual(self.hit(660, sliding=False), 1)

    def test_members_expire_unless_refreshed(self) -> None:
        enter = self.counters.enter
        self.assertEqual(self.successResultOf(enter("ip", "a", 0, 100)), 1)
        self.assertEqual(self.successResultOf(enter("ip", "b", 50, 100)), 2)
        self.successResultOf(self.counters.refresh([("ip", "a")], 90, 100))
        self.assertEqual(self.successResultOf(enter("ip", "c", 160, 100)), 2)  # b expired at 150
        self.successResultOf(self.counters.leave("ip", "a"))
        self.assertEqual(self.successResultOf(enter("ip", "d", 161, 100)), 2)
        self.successResultOf(self.counters.prune(10_000))


class LimitMixin:
    store_args: tuple[str, ...] = ()

    def engine(self, line: str, clock: Clock | None = None, **config: Any) -> Any:
        self.clock = clock or Clock()
        if clock is None:
            self.clock.advance(1_000_000)
        engine = make_engine([Logs, f"{line} {' '.join(self.store_args)}", "rcpt_ok", CaptureQueue],
                             config={"rcpthosts": ["example.test", "other.test"], **config}, clock=self.clock)
        self.addCleanup(engine.close)
        return engine

    def connect(self, engine: Any, ip: str = "192.0.2.1") -> SMTPDialogue:
        smtp = SMTPDialogue(engine, remote_ip=ip)
        self.addCleanup(smtp.close)
        return smtp

    def test_concurrency_per_ip(self) -> None:
        engine = self.engine("limit concurrency 2")
        first, second = self.connect(engine), self.connect(engine)
        self.assertEqual((first.greeting[0].code, second.greeting[0].code), (220, 220))
        third = self.connect(engine)
        [refusal] = third.greeting
        self.assertEqual((refusal.code, refusal.enhanced), (421, "4.7.0"))
        self.assertIn("Too many concurrent connections from 192.0.2.1 (3, at most 2)", refusal.text)
        self.assertTrue(third.closed)
        third.close()
        self.assertEqual(self.connect(engine, "192.0.2.2").greeting[0].code, 220)  # another IP
        first.close()
        self.assertEqual(self.connect(engine).greeting[0].code, 220)  # a slot came free

    def test_connection_rate(self) -> None:
        engine = self.engine("limit connections 3/1m")
        for _ in range(3):
            smtp = self.connect(engine)
            self.assertEqual(smtp.greeting[0].code, 220)
            smtp.close()
        [refusal] = self.connect(engine).greeting
        self.assertEqual(refusal.code, 421)
        self.assertIn("Too many connections from 192.0.2.1 (4 in 1m, at most 3)", refusal.text)
        self.clock.advance(121)
        self.assertEqual(self.connect(engine).greeting[0].code, 220)

    def test_sender_messages_and_null_sender(self) -> None:
        engine = self.engine("limit sender_messages 2/1h")
        smtp = self.connect(engine)
        for _ in range(2):
            self.assertTrue(smtp.deliver("<a@example.org>", ["<b@example.test>"], MESSAGE).accepted)
        replies = smtp.deliver("<a@Example.org>", ["<b@example.test>"], MESSAGE)
        self.assertEqual(replies.stopped_at, "MAIL FROM:<a@Example.org>")
        self.assertEqual((replies[-1].code, replies[-1].enhanced), (451, "4.7.1"))
        self.assertEqual(replies[-1].text, "Too many messages from <a@example.org> (3 in 1h, at most 2), "
                                           "try again later")
        self.assertFalse(smtp.closed)
        for _ in range(3):
            self.assertTrue(smtp.deliver("<>", ["<b@example.test>"], MESSAGE).accepted)

    def test_recipient_rates(self) -> None:
        engine = self.engine("limit sender_recipients 3/1h domain_recipients 2/1h")
        smtp = self.connect(engine)
        replies = smtp.deliver("<a@example.org>", ["<x@example.test>", "<y@example.test>",
                                                    "<z@example.test>", "<w@other.test>", "<v@other.test>"],
                               MESSAGE)
        self.assertEqual(replies.refused, ["RCPT TO:<z@example.test>", "RCPT TO:<w@other.test>",
                                           "RCPT TO:<v@other.test>"])
        self.assertTrue(replies.accepted)
        texts = [reply.text for reply in replies if reply.code == 451]
        self.assertEqual(texts[0], "Too many recipients for example.test (3 in 1h, at most 2), "
                                   "try again later")
        self.assertIn("Too many recipients from <a@example.org> (4 in 1h, at most 3)", texts[1])

    def test_domain_messages_count_once_per_transaction(self) -> None:
        engine = self.engine("limit domain_messages 1/1h")
        smtp = self.connect(engine)
        self.assertTrue(smtp.deliver("<a@example.org>", ["<x@example.test>", "<y@example.test>"],
                                     MESSAGE).accepted)
        replies = smtp.deliver("<a@example.org>", ["<x@example.test>"], MESSAGE)
        self.assertEqual(replies.stopped_at, "RCPT TO:<x@example.test>")
        self.assertIn(("451", "Too many messages for example.test (2 in 1h, at most 1), try again later"),
                      [(str(r.code), r.text) for r in replies])

    def test_user_rates(self) -> None:
        engine = self.engine("limit user_messages 1/1d user_recipients 5/1d")
        smtp = self.connect(engine)
        smtp.send("EHLO client.example")
        anonymous = smtp.deliver("<a@example.org>", ["<x@example.test>"], MESSAGE)
        self.assertTrue(anonymous.accepted)
        smtp.session.connection.auth_user = "Alice"
        self.assertTrue(smtp.deliver("<a@example.org>", ["<x@example.test>"], MESSAGE).accepted)
        replies = smtp.deliver("<b@example.org>", ["<x@example.test>"], MESSAGE)
        self.assertEqual(replies[-1].text, "Too many messages from user Alice (2 in 1d, at most 1), "
                                           "try again later")

    def test_unrecognized_commands(self) -> None:
        engine = self.engine("limit unrecognized 2")
        smtp = self.connect(engine)
        self.assertEqual(smtp.send("FOO")[0].code, 500)
        [reply] = smtp.send("BAR")
        self.assertEqual((reply.code, reply.text), (421, "Too many unrecognized commands (2), closing "
                                                          "connection"))
        self.assertTrue(smtp.closed)

    def test_errors_close_the_connection(self) -> None:
        engine = self.engine("limit errors 2")
        smtp = self.connect(engine)
        smtp.send("EHLO client.example", "MAIL FROM:<a@example.org>")
        self.assertEqual(smtp.send("RCPT TO:<a@elsewhere.example>")[0].code, 550)
        self.assertEqual(smtp.send("RCPT TO:<b@elsewhere.example>")[0].code, 550)
        [reply] = smtp.send("RCPT TO:<c@example.test>")
        self.assertEqual((reply.code, reply.text), (421, "Too many errors (2), closing connection"))
        self.assertTrue(smtp.closed)


class SQLiteLimitTests(LimitMixin, unittest.TestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="limit-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.store_args = ("db_dir", directory)

    def test_two_workers_of_one_node_share_the_file(self) -> None:
        one = self.engine("limit concurrency 1")
        two = self.engine("limit concurrency 1", clock=self.clock)
        self.assertEqual(self.connect(one).greeting[0].code, 220)
        self.assertEqual(self.connect(two).greeting[0].code, 421)


class RedisLimitTests(LimitMixin, unittest.TestCase):
    def setUp(self) -> None:
        self.url = start_redis(self)
        self.store_args = ("redis", self.url)

    def test_nodes_share_the_counts(self) -> None:
        node_a = self.engine("limit concurrency 2 sender_messages 1/1h")
        node_b = self.engine("limit concurrency 2 sender_messages 1/1h", clock=self.clock)
        self.connect(node_a)
        self.connect(node_a)
        self.assertEqual(self.connect(node_b).greeting[0].code, 421)
        self.assertTrue(self.connect(node_a, "192.0.2.9").deliver("<s@example.org>", ["<x@example.test>"],
                                                                  MESSAGE).accepted)
        replies = self.connect(node_b, "192.0.2.9").deliver("<s@example.org>", ["<x@example.test>"], MESSAGE)
        self.assertEqual(replies[-1].code, 451)

    def test_a_dead_node_frees_its_slots(self) -> None:
        dead_clock, live_clock = Clock(), Clock()
        dead_clock.advance(1_000_000)
        live_clock.advance(1_000_000)
        dead = self.engine("limit concurrency 1 concurrency_ttl 60", clock=dead_clock)
        live = self.engine("limit concurrency 1 concurrency_ttl 60", clock=live_clock)
        self.connect(dead)  # its node dies: nothing refreshes or releases the slot
        refused = self.connect(live)
        self.assertEqual(refused.greeting[0].code, 421)
        refused.close()
        live_clock.advance(61)
        self.assertEqual(self.connect(live).greeting[0].code, 220)

    def test_live_connections_are_refreshed(self) -> None:
        engine = self.engine("limit concurrency 1 concurrency_ttl 60")
        self.connect(engine)
        for _ in range(10):
            self.clock.advance(20)  # the refresh runs every 20 s
        self.assertEqual(self.connect(engine).greeting[0].code, 421)

    def test_store_down_lets_mail_through(self) -> None:
        Logs.lines = []
        engine = make_engine([Logs, "limit concurrency 1 sender_messages 1/1h redis redis://127.0.0.1:1/0",
                              "rcpt_ok", CaptureQueue], config={"rcpthosts": "example.test"})
        self.addCleanup(engine.close)
        smtp = self.connect(engine)
        self.assertEqual(smtp.greeting[0].code, 220)
        self.assertTrue(smtp.deliver("<a@example.org>", ["<x@example.test>"], MESSAGE).accepted)
        self.assertTrue(any("store failed, connection limits not checked" in line for line in Logs.lines))
