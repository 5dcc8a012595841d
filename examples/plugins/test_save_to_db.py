"""save_to_db: an accepted message is a row in the database before the 250."""

import sqlite3
from pathlib import Path

from twisted.trial import unittest

from qptwisted.testing import SMTPDialogue, make_engine

HERE = Path(__file__).resolve().parent


class SaveToDatabaseTests(unittest.TestCase):
    def test_message_is_stored(self) -> None:
        path = Path(self.mktemp()).absolute()
        db = sqlite3.connect(path)
        self.addCleanup(db.close)
        db.execute("CREATE TABLE mails (msg_id TEXT, header BLOB, body BLOB)")
        db.commit()
        engine = make_engine(["rcpt_ok", f"save_to_db database {path}"], {"rcpthosts": "example.com"},
                             plugin_dirs=[HERE])
        replies = SMTPDialogue(engine).deliver("<a@example.org>", ["<b@example.com>"],
                                               "Message-Id: <1@example.org>\nSubject: hi\n\nhello\n")
        self.assertEqual(replies[-1], (250, "2.6.0", "Queued! <1@example.org>"))
        [(msg_id, header, body)] = db.execute("SELECT msg_id, header, body FROM mails").fetchall()
        self.assertEqual((msg_id, body), ("<1@example.org>", b"hello\n"))
        self.assertTrue(header.startswith(b"Received: ") and header.endswith(b"\nSubject: hi\n"))
