"""greylisting: first / too early / retry ok / white / whitelisted, SQLite and Redis, clock injected."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from contextlib import closing
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from qpplugins.greylisting import ExcludeList
from qptwisted import DECLINED, DENYSOFT, Address
from qptwisted.lib.store import PRUNE_INTERVAL
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook


class ExcludeListTests(unittest.TestCase):
    def test_postgrey_format(self) -> None:
        exclude = ExcludeList(["# comment", "192.0.2.0/24", "10.1.", "example.org",
                               "/^mx\\d+\\.big\\.test$/"])
        self.assertTrue(exclude.matches("192.0.2.7", None))
        self.assertTrue(exclude.matches("10.1.2.3", None))
        self.assertTrue(exclude.matches("198.51.100.1", "smtp.example.org"))
        self.assertTrue(exclude.matches("198.51.100.1", "mx12.big.test"))
        self.assertFalse(exclude.matches("198.51.100.1", "notexample.org"))


class GreylistingMixin:
    store_args: tuple[str, ...] = ()

    def engine(self, line: str = "greylisting", **config: Any) -> Any:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        engine = make_engine([f"{line} {' '.join(self.store_args)}".strip()], config=config, clock=self.clock)
        self.addCleanup(engine.close)
        return engine

    def mail(self, engine: Any, ip: str = "192.0.2.1", sender: str = "<a@example.org>", **fields: Any) -> Any:
        txn = make_transaction(engine, make_connection(ip, **fields))
        txn.sender = Address.parse(sender)
        return run_hook(engine, "mail", txn, txn.sender)

    def rcpt(self, engine: Any, rcpt: str, sender: str = "<a@example.org>") -> Any:
        txn = make_transaction(engine, make_connection(remote_ip="192.0.2.1"), sender=sender)
        return run_hook(engine, "rcpt", txn, Address.parse(rcpt))

    @defer.inlineCallbacks
    def test_first_too_early_retry_ok_then_white(self) -> Any:
        engine = self.engine("greylisting black_timeout 300 grey_timeout 3600 white_timeout 86400")
        first = yield self.mail(engine)
        self.assertEqual((first.code, first.message), (DENYSOFT, "This mail is temporarily denied"))
        self.clock.advance(299)
        self.assertEqual((yield self.mail(engine)).code, DENYSOFT)  # too early
        self.clock.advance(2)
        self.assertEqual((yield self.mail(engine)).code, DECLINED)  # retried after the black window
        self.clock.advance(80000)
        self.assertEqual((yield self.mail(engine)).code, DECLINED)  # white, renewed
        self.clock.advance(80000)
        self.assertEqual((yield self.mail(engine)).code, DECLINED)
        self.assertEqual((yield self.mail(engine, ip="192.0.2.2")).code, DENYSOFT)  # other client

    @defer.inlineCallbacks
    def test_grey_entry_expires_and_white_entry_expires(self) -> Any:
        engine = self.engine("greylisting black_timeout 300 grey_timeout 3600 white_timeout 86400")
        yield self.mail(engine)
        self.clock.advance(3601)
        self.assertEqual((yield self.mail(engine)).code, DENYSOFT)  # too late: a new first time
        self.clock.advance(400)
        self.assertEqual((yield self.mail(engine)).code, DECLINED)
        self.clock.advance(86401)
        self.assertEqual((yield self.mail(engine)).code, DENYSOFT)

    @defer.inlineCallbacks
    def test_whitelisted_clients_are_never_greylisted(self) -> Any:
        engine = self.engine(greylist_exclude_files="greylist_clients", greylist_clients=["192.0.2.0/24"])
        self.assertEqual((yield self.mail(engine)).code, DECLINED)
        engine = self.engine()
        self.assertEqual((yield self.mail(engine, ip="198.51.100.1", relay_client=True)).code, DECLINED)
        self.assertEqual((yield self.mail(engine, ip="198.51.100.1", auth_user="u")).code, DECLINED)
        listed = make_connection(remote_ip="198.51.100.1", notes={"whitelisthost": "dnswl"})
        txn = make_transaction(engine, listed)
        self.assertEqual((yield run_hook(engine, "mail", txn, Address.parse("<a@b.test>"))).code, DECLINED)

    @defer.inlineCallbacks
    def test_per_recipient_at_rcpt(self) -> Any:
        engine = self.engine("greylisting sender 1 recipient 1 black_timeout 60")
        self.assertEqual((yield self.mail(engine)).code, DECLINED)
        self.assertEqual((yield self.rcpt(engine, "<bob@x.test>")).code, DENYSOFT)
        self.clock.advance(61)
        self.assertEqual((yield self.rcpt(engine, "<bob@x.test>")).code, DECLINED)
        self.assertEqual((yield self.rcpt(engine, "<carol@x.test>")).code, DENYSOFT)
        self.assertEqual((yield self.rcpt(engine, "<bob@x.test>", sender="<z@example.org>")).code, DENYSOFT)

    @defer.inlineCallbacks
    def test_deny_late_and_reject_zero(self) -> Any:
        engine = self.engine("greylisting deny_late 1")
        txn = make_transaction(engine, make_connection(remote_ip="192.0.2.1"), sender="<a@example.org>")
        self.assertEqual((yield run_hook(engine, "mail", txn, txn.sender)).code, DECLINED)
        self.assertEqual((yield run_hook(engine, "data", txn)).code, DENYSOFT)
        engine = self.engine("greylisting reject 0")
        self.assertEqual((yield self.mail(engine)).code, DECLINED)

    @defer.inlineCallbacks
    def test_p0f_and_geoip_selection(self) -> Any:
        engine = self.engine("greylisting p0f windows geoip CN,RU")
        result = yield self.mail(engine, notes={"p0f": {"genre": "Linux"}, "geoip_country": "CN"})
        self.assertEqual(result.code, DECLINED)
        result = yield self.mail(engine, notes={"p0f": {"genre": "Windows"}, "geoip_country": "US"})
        self.assertEqual(result.code, DECLINED)
        result = yield self.mail(engine, notes={"p0f": {"genre": "Windows"}, "geoip_country": "CN"})
        self.assertEqual(result.code, DENYSOFT)


class SQLiteGreylistingTests(GreylistingMixin, unittest.TestCase):
    """The default store: an SQLite file in db_dir."""

    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="greylist-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.store_args = ("db_dir", directory)


class StoreLifecycleTests(unittest.TestCase):
    """The SQLite store is pruned on the engine's clock and closed with the engine."""

    @defer.inlineCallbacks
    def test_pruned_hourly_and_closed_with_the_engine(self) -> Any:
        directory = tempfile.mkdtemp(prefix="greylist-")
        self.addCleanup(shutil.rmtree, directory, True)
        clock = Clock()
        clock.advance(1_000_000)
        engine = make_engine([f"greylisting db_dir {directory}"], clock=clock)
        store = engine.plugins[-1].store  # type: ignore[attr-defined]
        yield store.put("expires", "soon", clock.seconds(), 60)
        yield store.put("stays", "long", clock.seconds(), 7200)
        prunes: list[Any] = []
        prune = store.prune
        store.prune = lambda now: prunes.append(prune(now)) or prunes[-1]
        clock.advance(PRUNE_INTERVAL - 1)
        self.assertEqual(prunes, [])
        clock.advance(1)
        yield prunes[0]
        with closing(sqlite3.connect(store.path)) as db:
            self.assertEqual([row[0] for row in db.execute("SELECT key FROM greylist")], ["stays"])
        yield engine.close()
        self.assertRaises(sqlite3.ProgrammingError, store._call, "SELECT 1", ())
        clock.advance(PRUNE_INTERVAL)
        self.assertEqual(len(prunes), 1)


def start_redis(testcase: unittest.TestCase) -> str:
    """Start a private redis-server on a free loopback port; skip the test if there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise unittest.SkipTest("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="redis-")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", directory],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, True)

    testcase.addCleanup(stop)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return f"redis://127.0.0.1:{port}/0"
        except OSError:
            if process.poll() is not None:
                raise unittest.SkipTest("redis-server could not start") from None
            time.sleep(0.025)
    raise unittest.SkipTest("redis-server did not start listening")


class RedisGreylistingTests(GreylistingMixin, unittest.TestCase):
    """The shared store: a real redis-server, as several servers would use it."""

    def setUp(self) -> None:
        self.url = start_redis(self)
        self.store_args = ("redis", self.url)

    @defer.inlineCallbacks
    def test_two_servers_share_state(self) -> Any:
        one = self.engine("greylisting black_timeout 60")
        two = make_engine([f"greylisting black_timeout 60 redis {self.url}"], clock=self.clock)
        self.addCleanup(two.close)
        self.assertEqual((yield self.mail(one)).code, DENYSOFT)
        self.clock.advance(61)
        self.assertEqual((yield self.mail(two)).code, DECLINED)


