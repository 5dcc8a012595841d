"""maildir_domain: users who may receive get the mail in MAILDIRS/domain/user; others are refused."""

import sqlite3
from pathlib import Path

from twisted.trial import unittest

from qptwisted.testing import SMTPDialogue, make_engine

HERE = Path(__file__).resolve().parent
USERS = """CREATE TABLE domain (domain_id INTEGER PRIMARY KEY, is_active, domain_name);
CREATE TABLE "user" (user_id INTEGER PRIMARY KEY, domain_id, can_receive, can_login, username);
INSERT INTO domain VALUES (1, 1, 'example.com'), (2, 0, 'example.net');
INSERT INTO "user" VALUES (1, 1, 1, 1, 'bob'), (2, 1, 0, 1, 'carol'), (3, 2, 1, 1, 'bob');"""


class MaildirDomainTests(unittest.TestCase):
    def test_users_of_the_database_get_their_mail(self) -> None:
        base = Path(self.mktemp()).absolute()
        base.mkdir()
        sqlite3.connect(base / "users.sqlite").executescript(USERS).connection.close()
        smtp = SMTPDialogue(make_engine([f"maildir_domain {base} {base}/users.sqlite"], plugin_dirs=[HERE]))
        replies = smtp.deliver("<a@example.org>", ["<Bob@example.com>", "<carol@example.com>",
                                                   "<bob@example.net>"], "Subject: hi\n\nhello\n")
        self.assertTrue(replies.accepted)
        self.assertEqual(replies.refused, ["RCPT TO:<carol@example.com>", "RCPT TO:<bob@example.net>"])
        [stored] = (base / "example.com" / "bob" / "new").iterdir()
        self.assertTrue(stored.read_bytes().startswith(b"Return-Path: <a@example.org>\nDelivered-To: Bob@"))
