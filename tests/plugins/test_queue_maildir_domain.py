"""queue/maildir-domain: SQLite user table, RCPT refusal, per-user Maildirs, failure is 452."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK, Address
from qptwisted.testing import make_engine, make_transaction, run_hook

MESSAGE = b"From: a@example.org\nSubject: domains\nMessage-Id: <d-1@example.org>\n\nper user\n"


class MaildirDomainTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.db = self.base.parent / "users.sqlite"
        self.engine = make_engine([f"queue/maildir-domain {self.base} sqlite:{self.db}"], clock=reactor)
        self.plugin = self.engine.plugins[0]
        self.addCleanup(self.engine.close)  # the plugin's database and the Maildir writer process

    @defer.inlineCallbacks
    def populate(self) -> Any:
        # the first lookup creates the schema
        yield run_hook(self.engine, "rcpt", make_transaction(self.engine), Address.parse("<x@y.test>"))
        with sqlite3.connect(self.db) as db:
            db.execute("INSERT INTO domain (domain_id, is_active, domain_name) VALUES (1, 1, 'example.test')")
            db.execute("INSERT INTO domain (domain_id, is_active, domain_name) VALUES (2, 0, 'off.test')")
            for name, receive in (("bob", 1), ("carol", 1), ("mute", 0)):
                db.execute('INSERT INTO "user" (domain_id, can_receive, can_login, username) '
                           "VALUES (1, ?, 1, ?)", (receive, name))
            db.execute('INSERT INTO "user" (domain_id, can_receive, can_login, username) '
                       "VALUES (2, 1, 1, 'bob')")

    @defer.inlineCallbacks
    def test_unknown_users_refused_at_rcpt(self) -> Any:
        yield self.populate()
        txn = make_transaction(self.engine, sender="<a@example.org>")
        for address, code in (("<Bob@Example.TEST>", OK), ("<nobody@example.test>", DENY),
                              ("<mute@example.test>", DENY), ("<bob@off.test>", DENY),
                              ("<bob@other.test>", DENY)):
            result = yield run_hook(self.engine, "rcpt", txn, Address.parse(address))
            self.assertEqual(result.code, code, address)

    @defer.inlineCallbacks
    def test_one_copy_per_user_maildir(self) -> Any:
        yield self.populate()
        txn = make_transaction(self.engine, sender="<a@example.org>",
                               recipients=["<bob@example.test>", "<Carol@example.test>"], message=MESSAGE)
        result = yield run_hook(self.engine, "queue", txn)
        self.assertEqual(result.code, OK)
        for user in ("bob", "carol"):
            new = self.base / "example.test" / user / "new"
            [path] = list(new.iterdir())
            content = path.read_bytes()
            self.assertIn(b"Delivered-To: ", content)
            self.assertTrue(content.endswith(b"\n\nper user\n"))
            self.assertEqual(list((self.base / "example.test" / user / "tmp").iterdir()), [])

    @defer.inlineCallbacks
    def test_write_failure_is_452_with_a_log_line_and_nothing_in_new(self) -> Any:
        yield self.populate()
        (self.base / "example.test").mkdir(parents=True)
        (self.base / "example.test" / "carol").write_text("a file where a Maildir should be")
        logged: list[str] = []
        self.patch(self.plugin, "log", lambda level, *message: logged.append(" ".join(map(str, message))))
        txn = make_transaction(self.engine, sender="<a@example.org>",
                               recipients=["<bob@example.test>", "<carol@example.test>"], message=MESSAGE)
        result = yield run_hook(self.engine, "queue", txn)
        self.assertEqual(result.code, DENYSOFT)
        self.assertTrue(any("delivery failed" in line for line in logged), logged)
        bob_new = self.base / "example.test" / "bob" / "new"
        self.assertEqual(list(bob_new.iterdir()) if bob_new.exists() else [], [])
