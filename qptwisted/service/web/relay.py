"""The web view with ``--workers``: each worker's activity, relayed to the master that serves the page.

A worker keeps its own :class:`~qptwisted.service.web.activity.Activity` and
subscribes a :class:`PipeSubscriber` to it: once a second one line
``EVENT JSON`` on a pipe to the master. The master's
:class:`WorkersActivity` merges the lines of all workers (rows, live
sessions, per-second figures) and serves them to browsers exactly as a
single process does. A worker never waits for the master: a line that does
not fit in the pipe is dropped and the worker sends its full state at the
next tick instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.interfaces import IReactorTime

from qptwisted.service.web.activity import Activity, Subscriber


class PipeSubscriber(Subscriber):
    """A worker's end: writes each event as one line to a non-blocking pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.rest = b""  # the end of a line the pipe did not take yet: it goes first next time
        os.set_blocking(fd, False)

    def send(self, event: str, data: str) -> bool:
        """Write ``EVENT DATA\\n``; False when the pipe is full (the master then gets a full state later)."""
        try:
            if self.rest:
                self.rest = self.rest[os.write(self.fd, self.rest):]
                if self.rest:
                    return False
            line = f"{event} {data}\n".encode()
            self.rest = line[os.write(self.fd, line):]
        except BlockingIOError:
            return False
        except OSError:
            return False  # the master is gone; the worker stops by itself
        return True


class _Worker:
    """What the master knows of one worker: its live sessions and its plugins."""

    __slots__ = ("live", "sessions", "plugins", "partial")

    def __init__(self) -> None:
        self.live: list[dict[str, Any]] = []
        self.sessions = 0
        self.plugins: list[str] = []
        self.partial = b""


class WorkersActivity(Activity):
    """The master's activity: the sum of its workers', fed by :meth:`receive`."""

    def __init__(self, clock: IReactorTime, keep: int = 100, history: int = 120, tick: float = 1.0,
                 live_max: int = 200) -> None:
        super().__init__(clock, keep, history, tick, live_max)
        self.workers: dict[int, _Worker] = {}

    def receive(self, pid: int, data: bytes) -> None:
        """Bytes from worker ``pid``'s pipe: complete lines are events."""
        worker = self.workers.setdefault(pid, _Worker())
        lines = (worker.partial + data).split(b"\n")
        worker.partial = lines.pop()
        for line in lines:
            event, _, payload = line.decode("utf-8", "replace").partition(" ")
            try:
                update = json.loads(payload)
            except ValueError:
                continue
            self._merge(pid, worker, event, update)

    def _merge(self, pid: int, worker: _Worker, event: str, update: dict[str, Any]) -> None:
        worker.plugins = update.get("plugins") or worker.plugins
        if worker.plugins:
            self.plugins = worker.plugins
        worker.live = [dict(row, id=f"{pid}:{row['id']}") for row in update.get("live", ())]
        worker.sessions = update.get("sessions", len(worker.live))
        known = {row["id"] for row in self.rows} if event == "state" else set()
        for row in update.get("rows", ()):
            row = dict(row, id=f"{pid}:{row['id']}")  # ids are per process
            if row["id"] not in known:
                self._add(row)
        figures = update.get("figures")
        if event == "update" and figures:
            for state in ("accepted", "refused", "deferred"):
                self._messages[state] += figures.get(state, 0)
            self._refusals.update(figures.get("refusals", {}))

    def forget(self, pid: int) -> None:
        """Worker ``pid`` exited: its sessions are gone."""
        self.workers.pop(pid, None)

    def live(self) -> list[dict[str, Any]]:
        """The live sessions of all workers (at most ``live_max``)."""
        rows: list[dict[str, Any]] = []
        for worker in self.workers.values():
            rows.extend(worker.live[: self.live_max - len(rows)])
        return sorted(rows, key=lambda row: row["time"])

    def session_count(self) -> int:
        """Sessions open now in all workers."""
        return sum(worker.sessions for worker in self.workers.values())


__all__ = ["PipeSubscriber", "WorkersActivity"]
