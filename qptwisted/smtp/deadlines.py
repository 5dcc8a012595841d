"""Many connections' deadlines on one reactor timer."""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_log = Logger()


class Expiring(Protocol):
    """Something with a deadline: told when it has passed."""

    def deadline_passed(self) -> None:
        """The time given to :meth:`Deadlines.add` has come."""


#: an entry: [when, sequence number, target or None once cancelled or fired]
Entry = list[Any]


class Deadlines:
    """A heap of deadlines behind one ``callLater`` on ``clock``.

    A Twisted ``DelayedCall`` per idle connection costs about 400 bytes; an
    entry here costs about 100, and a thousand idle sessions hold a
    thousand of them. Cancelled entries stay in the heap until they come
    due or until they are half of it, when the heap is rebuilt without them
    (as the reactor does with its own calls).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._heap: list[Entry] = []
        self._numbers = itertools.count()
        self._cancelled = 0
        self._firing = False
        #: the one reactor call behind every entry (None while the heap is empty)
        self.timer: IDelayedCall | None = None

    def __len__(self) -> int:
        """Entries still to come (not cancelled)."""
        return len(self._heap) - self._cancelled

    def add(self, when: float, target: Expiring) -> Entry:
        """Call ``target.deadline_passed()`` at ``when`` (clock seconds); the entry cancels it."""
        entry: Entry = [when, next(self._numbers), target]
        heapq.heappush(self._heap, entry)
        if not self._firing and (self.timer is None or when < self.timer.getTime()):
            self._arm()
        return entry

    def cancel(self, entry: Entry) -> None:
        """Forget ``entry`` (nothing happens if it fired or was cancelled already)."""
        if entry[2] is None:
            return
        entry[2] = None
        self._cancelled += 1
        if self._firing:
            return
        if self._cancelled == len(self._heap):  # the last connection went: no timer left behind
            self._heap.clear()
            self._cancelled = 0
            self._arm()
        elif self._cancelled > 50 and self._cancelled * 2 > len(self._heap):
            self._heap = [live for live in self._heap if live[2] is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0
            self._arm()

    def _arm(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        while self._heap and self._heap[0][2] is None:  # no wake-up for a cancelled head
            heapq.heappop(self._heap)
            self._cancelled -= 1
        if self._heap:
            self.timer = self.clock.callLater(max(0.0, self._heap[0][0] - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self.timer = None
        self._firing = True
        try:
            now, heap = self.clock.seconds(), self._heap
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                target, entry[2] = entry[2], None
                if target is None:
                    self._cancelled -= 1
                    continue
                try:
                    target.deadline_passed()
                except Exception:  # one connection's failure must not stop the others' deadlines
                    _log.failure("deadline of {target!r}", target=target)
        finally:
            self._firing = False
            self._arm()
