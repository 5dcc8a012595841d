"""Shared counters for rate limits and concurrency caps: SQLite on one node, Redis for all nodes.

Two operations, each atomic in both stores, used from the reactor thread
through Deferreds (the blocking calls run on the engine's thread pool):

- :meth:`Counters.hit` adds to a **rate** counter and answers the count in
  the window. Windows are *sliding* by default: two fixed buckets of the
  window's length, the previous one weighted by how much of it still lies
  inside the window (``current + previous * (1 - elapsed/window)``), which
  is what Cloudflare and nginx-style limiters do: smooth at bucket edges,
  two numbers per key, no per-event log. ``sliding=False`` uses the current
  bucket only (fixed windows: a client may get up to twice the rate across
  a bucket edge). Every attempt counts, refused ones too (as Postfix's
  anvil counts).
- :meth:`Counters.enter` / :meth:`Counters.leave` keep a **set** of members
  (connections) per key and answer its size: the concurrency of an IP
  across every process that shares the store. A member expires ``ttl``
  seconds after it was last entered or :meth:`refreshed <Counters.refresh>`,
  so the slots of a node that died (SIGKILL, power) come free by
  themselves instead of blocking the client for ever.

Redis does each operation in one Lua script (``EVALSHA``), so concurrent
nodes never lose an update; SQLite uses single statements and ``BEGIN
IMMEDIATE`` transactions, so the workers of one node (``--workers``) that
share the file agree. Times are the caller's clock, as in
:mod:`qptwisted.lib.store`.

:func:`open_counters` takes the same store argument as
:func:`~qptwisted.lib.store.open_store`: ``sqlite``, ``sqlite:PATH`` or
``redis://host:port/db``.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from qptwisted.lib.store import PRUNE_INTERVAL, Runner, redis_client, store_location

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine


class Counters(Protocol):
    """What a limit needs from its store."""

    def hit(self, key: str, window: float, now: float, amount: int = 1,
            sliding: bool = True) -> Deferred[float]:
        """Add ``amount`` to ``key``'s rate in a ``window``-second window; the count now in the window."""

    def enter(self, key: str, member: str, now: float, ttl: float) -> Deferred[int]:
        """Put ``member`` into the set ``key`` until ``now + ttl``; the number of live members."""

    def leave(self, key: str, member: str) -> Deferred[None]:
        """Take ``member`` out of the set ``key``."""

    def refresh(self, members: list[tuple[str, str]], now: float, ttl: float) -> Deferred[None]:
        """Keep ``(key, member)`` pairs alive until ``now + ttl`` (those that are still there)."""

    def close(self) -> None:
        """Release the connection."""


def _bucket(window: float, now: float) -> tuple[int, float]:
    """The bucket number of ``now`` and the weight of the previous bucket."""
    number = math.floor(now / window)
    elapsed = (now - number * window) / window
    return number, 1.0 - elapsed


def _weighted(current: float, previous: float, weight: float, sliding: bool) -> float:
    return current + previous * weight if sliding else current


_HIT = """
local current = redis.call('INCRBY', KEYS[1], ARGV[1])
if current == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local previous = redis.call('GET', KEYS[2])
return {current, previous or 0}
"""
_ENTER = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return redis.call('ZCARD', KEYS[1])
"""


class RedisCounters:
    """Counters in Redis under ``<prefix>:rate:...`` and ``<prefix>:set:...``."""

    def __init__(self, url: str, prefix: str, run: Runner) -> None:
        self.url = url
        self.prefix = prefix
        self._run = run
        self._redis = redis_client(url)
        self._hit = self._redis.register_script(_HIT)
        self._enter = self._redis.register_script(_ENTER)

    def hit(self, key: str, window: float, now: float, amount: int = 1,
            sliding: bool = True) -> Deferred[float]:
        """Add to a rate counter (one Lua script: increment, expire, read the previous bucket)."""
        number, weight = _bucket(window, now)
        base = f"{self.prefix}:rate:{key}:{window:g}"
        keys = [f"{base}:{number}", f"{base}:{number - 1}"]
        ttl = int(math.ceil(2 * window)) + 1
        d = self._run(self._hit, keys=keys, args=[amount, ttl])
        return d.addCallback(lambda pair: _weighted(float(pair[0]), float(pair[1]), weight, sliding))

    def enter(self, key: str, member: str, now: float, ttl: float) -> Deferred[int]:
        """Join a set (one Lua script: drop the expired, add, count)."""
        d = self._run(self._enter, keys=[f"{self.prefix}:set:{key}"],
                      args=[now, now + ttl, member, int(math.ceil(ttl)) + 1])
        return d.addCallback(int)

    def leave(self, key: str, member: str) -> Deferred[None]:
        """Leave a set."""
        return self._run(self._redis.zrem, f"{self.prefix}:set:{key}", member).addCallback(lambda _: None)

    def refresh(self, members: list[tuple[str, str]], now: float, ttl: float) -> Deferred[None]:
        """Push the expiry of live members on, in one pipeline (``ZADD XX``: gone ones stay gone)."""

        def run() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for key, member in members:
                name = f"{self.prefix}:set:{key}"
                pipe.zadd(name, {member: now + ttl}, xx=True)
                pipe.expire(name, int(math.ceil(ttl)) + 1)
            pipe.execute()

        return self._run(run)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


class SQLiteCounters:
    """Counters in an SQLite file (tables ``<name>_rates`` and ``<name>_members``)."""

    def __init__(self, path: str, name: str, run: Runner) -> None:
        if not name.isidentifier():
            raise ValueError(f"bad table name {name!r}")
        self.path = path
        self._rates, self._members = f"{name}_rates", f"{name}_members"
        self._run = run
        self._lock = threading.Lock()
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # counters, not mail: a crash may lose the last
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {self._rates} "
                             "(key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL NOT NULL)")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {self._members} (key TEXT NOT NULL, "
                             "member TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (key, member))")

    def _hit(self, keys: tuple[str, str], amount: int, now: float, ttl: float) -> tuple[int, int]:
        with self._lock:
            current = self._db.execute(
                f"INSERT INTO {self._rates} (key, count, expires) VALUES (?, ?, ?) ON CONFLICT(key) DO "
                f"UPDATE SET count = count + excluded.count RETURNING count",
                (keys[0], amount, now + ttl)).fetchone()[0]
            row = self._db.execute(f"SELECT count FROM {self._rates} WHERE key = ? AND expires > ?",
                                   (keys[1], now)).fetchone()
        return int(current), int(row[0]) if row else 0

    def hit(self, key: str, window: float, now: float, amount: int = 1,
            sliding: bool = True) -> Deferred[float]:
        """Add to a rate counter (one UPSERT), read the previous bucket."""
        number, weight = _bucket(window, now)
        base = f"{key}:{window:g}"
        d = self._run(self._hit, (f"{base}:{number}", f"{base}:{number - 1}"), amount, now,
                      (number + 2) * window - now + 1)  # lives while it can be the previous bucket
        return d.addCallback(lambda pair: _weighted(float(pair[0]), float(pair[1]), weight, sliding))

    def _enter(self, key: str, member: str, now: float, ttl: float) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(f"DELETE FROM {self._members} WHERE key = ? AND expires <= ?", (key, now))
                self._db.execute(f"INSERT OR REPLACE INTO {self._members} (key, member, expires) "
                                 "VALUES (?, ?, ?)", (key, member, now + ttl))
                count = self._db.execute(f"SELECT COUNT(*) FROM {self._members} WHERE key = ?",
                                         (key,)).fetchone()[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(count)

    def enter(self, key: str, member: str, now: float, ttl: float) -> Deferred[int]:
        """Join a set (one transaction: drop the expired, add, count)."""
        return self._run(self._enter, key, member, now, ttl)

    def _execute(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._db.executemany(sql, rows)

    def leave(self, key: str, member: str) -> Deferred[None]:
        """Leave a set."""
        return self._run(self._execute, f"DELETE FROM {self._members} WHERE key = ? AND member = ?",
                         [(key, member)])

    def refresh(self, members: list[tuple[str, str]], now: float, ttl: float) -> Deferred[None]:
        """Push the expiry of live members on."""
        sql = f"UPDATE {self._members} SET expires = ? WHERE key = ? AND member = ?"
        return self._run(self._execute, sql, [(now + ttl, key, member) for key, member in members])

    def prune(self, now: float) -> Deferred[None]:
        """Drop expired buckets and members."""

        def run() -> None:
            with self._lock:
                self._db.execute(f"DELETE FROM {self._rates} WHERE expires <= ?", (now,))
                self._db.execute(f"DELETE FROM {self._members} WHERE expires <= ?", (now,))

        return self._run(run)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def open_counters(spec: str | None, default_path: str, name: str, engine: Engine) -> Counters:
    """Counters from a plugin argument (as :func:`~qptwisted.lib.store.open_store`), on ``engine``'s threads.

    An SQLite file is pruned every :data:`~qptwisted.lib.store.PRUNE_INTERVAL`
    seconds on the engine's clock; Redis expires keys by itself.
    """
    kind, where = store_location(spec, default_path, engine)
    if kind == "redis":
        return RedisCounters(where, name, engine.defer_to_thread)
    counters = SQLiteCounters(where, name, engine.defer_to_thread)
    engine.call_every(PRUNE_INTERVAL, lambda: counters.prune(float(engine.clock.seconds())))
    return counters
