# Seed 002 (OSCON 2007 lightning talk), "Save incoming mail to DB": 12 lines of Perl.
"""save_to_db: a queue plugin that stores each accepted message in an SQLite table.

Each message becomes a row of ``mails``: its Message-Id, its header block
(with our Received) and its body. The insert runs on the engine's thread
pool and is committed before the client gets ``250 Queued! <Message-Id>``,
so an accepted message is on disk. If the database fails the client gets a
451 and tries again later. The table must exist::

    CREATE TABLE mails (msg_id TEXT, header BLOB, body BLOB);

Argument: ``database PATH``, the SQLite file (default ``mails.sqlite``;
relative paths are taken in the config directory).

config/plugins::

    save_to_db database /var/lib/qpsmtpd/mails.sqlite
"""

import sqlite3
from contextlib import closing

from qptwisted import OK, HookAnswer, Plugin, Transaction, arg


class SaveToDatabase(Plugin):
    """Store accepted messages in SQLite."""

    name = "save_to_db"
    database = arg.path("mails.sqlite", "the SQLite file (relative: in the config directory)")

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        return self.defer_to_thread(self.save, transaction)

    def save(self, t: Transaction) -> HookAnswer:
        """Insert the message and commit; blocking, so it runs on the thread pool."""
        with closing(sqlite3.connect(self.database)) as db, db:  # the inner "with db" commits
            db.execute("INSERT INTO mails VALUES(?,?,?)", (t.message_id, t.header.to_bytes(), t.body_bytes()))
        return OK, f"Queued! {t.message_id}"
