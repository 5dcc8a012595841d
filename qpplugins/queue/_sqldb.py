"""Database access for the SQL-backed queue plugins: SQLite or PostgreSQL through adbapi.

Not a plugin. :class:`Database` understands ``sqlite:PATH`` (relative paths
are taken in the config directory, through the ``resolve`` it is given) and
``postgresql://user@host:port/dbname`` (needs ``psycopg``). Queries are
written with ``?`` placeholders and translated for the driver. Every call
runs on adbapi's thread pool, never on the reactor thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.enterprise import adbapi


class Database:
    """A connection pool plus what differs between SQLite and PostgreSQL."""

    def __init__(self, dsn: str, resolve: Callable[[str], Path]) -> None:
        self.dsn = dsn
        if dsn.startswith("sqlite:"):
            path = dsn[len("sqlite:"):]
            if path != ":memory:":
                path = str(resolve(path))
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self.kind = "sqlite"
            self.pool = adbapi.ConnectionPool("sqlite3", path, check_same_thread=False, cp_min=1, cp_max=1,
                                              cp_openfun=_sqlite_setup)
        elif dsn.startswith(("postgresql:", "postgres:")):
            self.kind = "postgresql"
            self.pool = adbapi.ConnectionPool("psycopg", dsn, cp_min=1, cp_max=4, cp_reconnect=True)
        else:
            raise ValueError(f"unsupported database {dsn!r}: use sqlite:PATH or postgresql://...")

    def sql(self, query: str) -> str:
        """Translate ``?`` placeholders and type names for the driver."""
        if self.kind == "postgresql":
            query = query.replace("?", "%s").replace("BLOB", "BYTEA")
            query = query.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        return query

    def run_interaction(self, function: Any, *args: Any) -> Any:
        """``function(cursor, *args)`` in one committed transaction, on the pool's thread."""
        return self.pool.runInteraction(function, *args)

    def close(self) -> None:
        """Stop the pool's threads and close its connections."""
        self.pool.close()


def _sqlite_setup(connection: Any) -> None:
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=5000")
