"""queue/sql with SQLite (embedded) and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from qptwisted import DENYSOFT, OK
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.queue_support import shared_postgresql

MESSAGE = b"From: a@example.org\nSubject: sql\nMessage-Id: <s-1@example.org>\n\nstored body\n"


class SQLMixin:
    def engine(self, line: str) -> Any:
        engine = make_engine([line], clock=reactor)
        plugin = next(p for p in engine.plugins if p.name == "queue/sql")
        self.addCleanup(plugin.close)  # type: ignore[attr-defined]
        return engine

    def queue(self, engine: Any) -> defer.Deferred[Any]:
        txn = make_transaction(engine, sender="<a@example.org>",
                               recipients=["<b@example.net>", "<c@example.net>"], message=MESSAGE)
        txn.connection.hello_host = "client.example"
        return run_hook(engine, "queue", txn)


class SQLiteTests(SQLMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_schema_created_and_row_committed_before_250(self) -> Any:
        path = Path(self.mktemp()).resolve() / "q.sqlite"
        engine = self.engine(f"queue/sql sqlite:{path}")
        first = yield self.queue(engine)
        second = yield self.queue(engine)
        self.assertEqual((first.code, second.code), (OK, OK))
        self.assertEqual((first.message, second.message), ("Queued! 1", "Queued! 2"))
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT client_ip, helo, sender, recipients, message_id, headers, body "
                              "FROM messages ORDER BY id").fetchall()
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0][:5], ("192.0.2.1", "client.example", "a@example.org",
                                       "b@example.net\nc@example.net", "<s-1@example.org>"))
        self.assertIn(b"Subject: sql\n", rows[0][5])
        self.assertEqual(rows[0][6], b"stored body\n")

    @defer.inlineCallbacks
    def test_relative_path_is_in_the_config_directory(self) -> Any:
        engine = self.engine("queue/sql table=inbound")
        result = yield self.queue(engine)
        self.assertEqual(result.code, OK)
        with sqlite3.connect(Path(engine.config.directory) / "queue.sqlite") as db:
            self.assertEqual(db.execute("SELECT count(*) FROM inbound").fetchone(), (1,))

    @defer.inlineCallbacks
    def test_database_error_is_452_and_nothing_half_stored(self) -> Any:
        path = Path(self.mktemp()).resolve() / "q.sqlite"
        path.parent.mkdir(parents=True)
        with sqlite3.connect(path) as db:  # a table of that name with the wrong shape
            db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, other TEXT)")
        engine = self.engine(f"queue/sql sqlite:{path}")
        result = yield self.queue(engine)
        self.assertEqual(result.code, DENYSOFT)
        with sqlite3.connect(path) as db:
            self.assertEqual(db.execute("SELECT count(*) FROM messages").fetchone(), (0,))


class PostgreSQLTests(SQLMixin, unittest.TestCase):
    def setUp(self) -> None:
        self.pg = shared_postgresql()

    @defer.inlineCallbacks
    def test_stored_in_postgresql(self) -> Any:
        table = "t_" + uuid.uuid4().hex[:8]
        engine = self.engine(f"queue/sql {self.pg.dsn} table={table}")
        result = yield self.queue(engine)
        self.assertEqual(result.code, OK, result.message)
        rows = self.pg.query(f"SELECT id, sender, recipients, body FROM {table}")
        self.assertEqual(len(rows), 1)
        self.assertEqual(result.message, f"Queued! {rows[0][0]}")
        self.assertEqual(rows[0][1:3], ("a@example.org", "b@example.net\nc@example.net"))
        self.assertEqual(bytes(rows[0][3]), b"stored body\n")  # type: ignore[arg-type]

    @defer.inlineCallbacks
    def test_server_down_is_452(self) -> Any:
        from tests.plugins.queue_support import free_port

        engine = self.engine(f"queue/sql postgresql://qp@127.0.0.1:{free_port()}/postgres")
        result = yield self.queue(engine)
        self.assertEqual(result.code, DENYSOFT)
