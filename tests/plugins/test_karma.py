"""karma: history and the penalty box, SQLite and Redis, clock injected."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENY_DISCONNECT
from qptwisted.core.codes import HookResult
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from tests.plugins.test_greylisting import start_redis


class KarmaMixin:
    store_args: tuple[str, ...] = ()

    def engine(self, line: str = "karma") -> Any:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        engine = make_engine([f"{line} {' '.join(self.store_args)}"], clock=self.clock)
        self.addCleanup(engine.plugins[-1].store.close)
        return engine

    @defer.inlineCallbacks
    def visit(self, engine: Any, karma: int = 0, ip: str = "192.0.2.1", denials: int = 0) -> Any:
        """One connection: connect, some refusals or karma, disconnect; the connect answer."""
        txn = make_transaction(engine, make_connection(ip))
        result = yield run_hook(engine, "connect", txn)
        if result.code == DECLINED:
            plugin = engine.plugins[-1]
            for _ in range(denials):
                plugin.hook_deny(txn, "dnsbl", DENY, "listed")
            plugin.adjust_karma(txn, karma)
        yield run_hook(engine, "disconnect", txn)
        return result, txn

    @defer.inlineCallbacks
    def test_penalty_box_after_strikes_and_release(self) -> Any:
        engine = self.engine("karma strikes 2 penalty_days 1")
        (first, _) = yield self.visit(engine, denials=1)
        self.assertEqual(first.code, DECLINED)
        (second, txn) = yield self.visit(engine, denials=2)
        self.assertEqual(second.code, DECLINED)
        self.assertEqual(txn.connection.notes["karma_history"], -1)
        (boxed, _) = yield self.visit(engine)
        self.assertIsInstance(boxed, HookResult)
        self.assertEqual(boxed.code, DENY_DISCONNECT)
        self.assertIn("You were naughty", boxed.message)
        (other, _) = yield self.visit(engine, ip="192.0.2.2")
        self.assertEqual(other.code, DECLINED)
        self.clock.advance(86401)
        (released, _) = yield self.visit(engine)
        self.assertEqual(released.code, DECLINED)

    @defer.inlineCallbacks
    def test_nice_clients_build_history(self) -> Any:
        engine = self.engine()
        for _ in range(3):
            txn = make_transaction(engine, make_connection(remote_ip="192.0.2.5"))
            yield run_hook(engine, "connect", txn)
            yield run_hook(engine, "queue_post", txn)
            yield run_hook(engine, "disconnect", txn)
        (_, txn) = yield self.visit(engine, ip="192.0.2.5", denials=1)
        self.assertEqual(txn.connection.notes["karma_history"], 3)
        history = yield engine.plugins[-1].history("192.0.2.5")
        self.assertEqual((history.nice, history.naughty, history.connects), (3, 1, 4))

    @defer.inlineCallbacks
    def test_naughty_note_counts_and_reject_zero_only_logs(self) -> Any:
        engine = self.engine("karma strikes 1 reject 0")
        txn = make_transaction(engine, make_connection(remote_ip="192.0.2.9", notes={"naughty": "bad"}))
        yield run_hook(engine, "connect", txn)
        yield run_hook(engine, "disconnect", txn)
        (result, txn) = yield self.visit(engine, ip="192.0.2.9")
        self.assertEqual(result.code, DECLINED)
        self.assertTrue(txn.connection.notes["karma_penalty_box"])


class SQLiteKarmaTests(KarmaMixin, unittest.TestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="karma-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.store_args = ("db_dir", directory)


class RedisKarmaTests(KarmaMixin, unittest.TestCase):
    def setUp(self) -> None:
        self.store_args = ("redis", start_redis(self))
