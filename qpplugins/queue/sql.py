"""queue/sql: store each accepted message in an SQL table (SQLite or PostgreSQL).

Arguments: ``[DSN] [table=NAME] [timeout=S]``. ``DSN`` is ``sqlite:PATH``
(default ``sqlite:queue.sqlite``; a relative path is inside the config
directory) or ``postgresql://user@host:port/dbname`` (install ``psycopg``;
``pip install qptwisted[postgresql]``). ``table`` defaults to ``messages``;
``timeout`` (default 60 s, on the engine clock) bounds the insert.

The table is created on first use::

    id, received_at (UTC, ISO 8601), client_ip, helo, sender,
    recipients (one per line), message_id, headers (bytes), body (bytes)

The row is inserted in one transaction on adbapi's thread pool, never on
the reactor thread. ``250 Queued! <id>`` is sent only after the COMMIT
returned (SQLite with ``synchronous=FULL``); any database error is a 452
with a log line, and an aborted transaction leaves no row. A timeout is a
452 too; the insert may still commit afterwards, so a retried message can
be stored twice (at least once, never lost). The row id is the note
``queue_id``.

config/plugins::

    queue/sql
    queue/sql postgresql://qp@127.0.0.1:5432/mail table=inbound
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred

from qpplugins.queue._sqldb import Database
from qptwisted import DENYSOFT, LOGERROR, OK, ArgumentError, Plugin, Transaction, arg

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

SCHEMA = """CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    client_ip TEXT,
    helo TEXT,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    message_id TEXT,
    headers BLOB NOT NULL,
    body BLOB NOT NULL
)"""


class SQLQueue(Plugin):
    """Queue into an SQL table."""

    name = "queue/sql"
    dsn: str = arg.str("sqlite:queue.sqlite", "sqlite:PATH (relative: in the config directory) or "
                       "postgresql://user@host:port/dbname", positional=True)
    table: str = arg.str("messages", "the table the messages go into")
    insert_timeout: float = arg.duration(60, "how long an insert may take", aliases=("timeout",))

    def register(self, *args: str) -> None:
        """Check the table name and open the database pool."""
        if not _NAME.match(self.table):
            raise ArgumentError(f"plugin {self.plugin_name}: argument table: bad table name {self.table!r}")
        try:
            self.db = Database(self.dsn, self.engine.config.resolve)
        except ValueError as err:
            raise ArgumentError(f"plugin {self.plugin_name}: argument dsn: {err}") from None
        self._schema_ready = False

    def close(self) -> None:
        """Close the database pool."""
        self.db.close()

    def _insert(self, cursor: Any, row: tuple[Any, ...]) -> int:
        db = self.db
        if not self._schema_ready:
            cursor.execute(db.sql(SCHEMA.format(table=self.table)))
        query = (f"INSERT INTO {self.table} (received_at, client_ip, helo, sender, recipients, message_id,"
                 " headers, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        if db.kind == "postgresql":
            cursor.execute(db.sql(query) + " RETURNING id", row)
            return int(cursor.fetchone()[0])
        cursor.execute(query, row)
        return int(cursor.lastrowid)

    def hook_queue(self, transaction: Transaction) -> Deferred[Any]:
        assert transaction.sender is not None
        connection = transaction.connection
        row = (datetime.now(UTC).isoformat(timespec="seconds"), connection.remote_ip,
               connection.hello_host, transaction.sender.address,
               "\n".join(rcpt.address for rcpt in transaction.recipients), transaction.message_id,
               transaction.header_bytes(), transaction.body_bytes())

        def stored(row_id: int) -> tuple[Any, str]:
            self._schema_ready = True
            transaction.notes["queue_id"] = str(row_id)
            return OK, f"Queued! {row_id}"

        def failed(failure: Any) -> tuple[Any, str]:
            self.log(LOGERROR, f"cannot store message in {self.table}: "
                     f"{failure.type.__name__}: {failure.getErrorMessage()}")
            return DENYSOFT, "Queue error, try again later (#4.3.0)"

        deferred: Deferred[Any] = self.db.run_interaction(self._insert, row)
        deferred.addTimeout(self.insert_timeout, self.clock)
        return deferred.addCallbacks(stored, failed)
