"""Small key-value stores for plugin state (greylisting triplets, karma history).

Two implementations behind one interface, both used from the reactor thread
through Deferreds (the blocking calls run on the engine's thread pool):

- :class:`SQLiteStore`: an embedded SQLite file, the default; one server.
- :class:`RedisStore`: a Redis server (redis-py), for several servers that
  share state.

Values are strings. Expiry is expressed in the caller's clock (``now`` and
``ttl`` in seconds) so plugins stay testable with an injected clock; the
SQLite store compares against the ``now`` it is given, the Redis store also
sets a real TTL so Redis collects the garbage.

:func:`open_store` picks one from a plugin argument: empty or ``sqlite``
(optionally ``sqlite:PATH``) or a ``redis://host:port/db`` URL. It runs the
store's calls on the plugin's engine's thread pool, and, for SQLite, prunes
expired entries every hour (:data:`PRUNE_INTERVAL`) on the engine's clock
until the engine closes; Redis drops them itself by their TTL. The plugin
closes the store in its ``close()``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine

_T = TypeVar("_T")
Runner = Callable[..., Deferred[Any]]

#: seconds between two prunes of an SQLite store
PRUNE_INTERVAL = 3600.0


class KVStore(Protocol):
    """What plugins need: get, put with expiry, delete, keys by prefix."""

    def get(self, key: str, now: float) -> Deferred[str | None]:
        """The value of ``key``, or None if missing or expired at ``now``."""

    def put(self, key: str, value: str, now: float, ttl: float) -> Deferred[None]:
        """Store ``value`` until ``now + ttl``."""

    def delete(self, key: str) -> Deferred[None]:
        """Forget ``key``."""

    def items(self, now: float) -> Deferred[list[tuple[str, str, float]]]:
        """Every live ``(key, value, expires)``, sorted by key (for the inspection tools)."""

    def close(self) -> None:
        """Release the connection."""


class SQLiteStore:
    """A key-value table in an SQLite file; calls run on ``run`` (a thread pool runner)."""

    def __init__(self, path: str, table: str, run: Runner) -> None:
        if not table.isidentifier():
            raise ValueError(f"bad table name {table!r}")
        self.path = path
        self.table = table
        self._run = run
        self._lock = threading.Lock()
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} "
                             "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)")

    def _call(self, sql: str, args: tuple[Any, ...], fetch: bool | str = False) -> Any:
        with self._lock:
            cursor = self._db.execute(sql, args)
            if fetch == "all":
                return cursor.fetchall()
            return cursor.fetchone() if fetch else None

    def get(self, key: str, now: float) -> Deferred[str | None]:
        """The value of ``key``, or None if missing or expired at ``now``."""
        d = self._run(self._call, f"SELECT value, expires FROM {self.table} WHERE key = ?", (key,), True)
        return d.addCallback(lambda row: row[0] if row is not None and row[1] > now else None)

    def put(self, key: str, value: str, now: float, ttl: float) -> Deferred[None]:
        """Store ``value`` until ``now + ttl``."""
        return self._run(self._call, f"INSERT OR REPLACE INTO {self.table} (key, value, expires) "
                         "VALUES (?, ?, ?)", (key, value, now + ttl))

    def delete(self, key: str) -> Deferred[None]:
        """Forget ``key``."""
        return self._run(self._call, f"DELETE FROM {self.table} WHERE key = ?", (key,))

    def items(self, now: float) -> Deferred[list[tuple[str, str, float]]]:
        """Every live ``(key, value, expires)``, sorted by key."""
        return self._run(self._call, f"SELECT key, value, expires FROM {self.table} WHERE expires > ? "
                         "ORDER BY key", (now,), "all").addCallback(lambda rows: [tuple(r) for r in rows])

    def prune(self, now: float) -> Deferred[None]:
        """Drop every entry expired at ``now``."""
        return self._run(self._call, f"DELETE FROM {self.table} WHERE expires <= ?", (now,))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def redis_client(url: str) -> Any:
    """A ``redis`` client for ``url`` with bounded waits (a hung Redis answers DENYSOFT, not never)."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)


class RedisStore:
    """Keys ``<prefix>:<key>`` in Redis, holding ``"<expires>|<value>"``."""

    def __init__(self, url: str, prefix: str, run: Runner) -> None:
        self.url = url
        self.prefix = prefix
        self._run = run
        self._redis = redis_client(url)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def get(self, key: str, now: float) -> Deferred[str | None]:
        """The value of ``key``, or None if missing or expired at ``now``."""

        def decode(raw: str | None) -> str | None:
            if raw is None:
                return None
            expires, _, value = raw.partition("|")
            return value if float(expires) > now else None

        return self._run(self._redis.get, self._key(key)).addCallback(decode)

    def put(self, key: str, value: str, now: float, ttl: float) -> Deferred[None]:
        """Store ``value`` until ``now + ttl`` (Redis expires it after ``ttl`` real seconds)."""
        return self._run(self._redis.set, self._key(key), f"{now + ttl}|{value}",
                         ex=max(1, int(ttl))).addCallback(lambda _: None)

    def delete(self, key: str) -> Deferred[None]:
        """Forget ``key``."""
        return self._run(self._redis.delete, self._key(key)).addCallback(lambda _: None)

    def _items(self, now: float) -> list[tuple[str, str, float]]:
        keys = sorted(self._redis.scan_iter(match=f"{self.prefix}:*", count=1000))
        found = []
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            for key, raw in zip(chunk, self._redis.mget(chunk), strict=True):
                if raw is None:
                    continue
                expires, _, value = str(raw).partition("|")
                if float(expires) > now:
                    found.append((key[len(self.prefix) + 1:], value, float(expires)))
        return found

    def items(self, now: float) -> Deferred[list[tuple[str, str, float]]]:
        """Every live ``(key, value, expires)``, sorted by key (SCAN: fine for inspection, not for hooks)."""
        return self._run(self._items, now)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


def store_location(spec: str | None, default_path: str, engine: Engine) -> tuple[str, str]:
    """``("redis", URL)`` or ``("sqlite", PATH)`` for a store argument (see :func:`open_store`)."""
    if spec and spec.startswith(("redis://", "rediss://", "unix://")):
        return "redis", spec
    if spec and spec.startswith("sqlite:"):
        return "sqlite", str(engine.config.resolve(spec[len("sqlite:"):], workdir=True))
    if spec and spec != "sqlite":
        raise ValueError(f"unknown store {spec!r}: use sqlite, sqlite:PATH or redis://host:port/db")
    return "sqlite", default_path


def open_store(spec: str | None, default_path: str, name: str, engine: Engine) -> SQLiteStore | RedisStore:
    """A store from a plugin argument, working on ``engine``'s thread pool.

    ``None``/``""``/``sqlite``: SQLite at ``default_path``; ``sqlite:PATH``: SQLite at PATH;
    ``redis://...`` or ``rediss://...``: Redis, keys prefixed with ``name``. An
    SQLite store is pruned every :data:`PRUNE_INTERVAL` seconds on the
    engine's clock, until the engine closes.
    """
    kind, where = store_location(spec, default_path, engine)
    if kind == "redis":
        return RedisStore(where, name, engine.defer_to_thread)
    store = SQLiteStore(where, name, engine.defer_to_thread)
    engine.call_every(PRUNE_INTERVAL, lambda: store.prune(float(engine.clock.seconds())))
    return store
