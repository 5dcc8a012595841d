"""loadcheck: turn clients away while the machine is overloaded.

At connect, if the 1-minute load average is above ``max_load``, the client
gets ``450 Server load too high, please try again later`` and is
disconnected (a temporary failure: real senders retry). The load is read
with ``os.getloadavg()`` (no process, no blocking) and cached for
``cache_time`` seconds.

Arguments: ``max_load N`` (default 7), ``cache_time S`` (seconds, default
10); qpsmtpd's ``uptime PATH`` is accepted and ignored.

config/plugins::

    loadcheck max_load 12 cache_time 5
"""

from __future__ import annotations

import os
from collections.abc import Callable

from qptwisted import DECLINED, DENYSOFT, LOGDEBUG, LOGINFO, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin


class LoadCheck(PolicyPlugin):
    """DENYSOFT at connect above a load average."""

    name = "loadcheck"
    max_load: float = arg.float(7, "1-minute load average above which clients are turned away")
    cache_time: float = arg.duration(10, "how long a load reading is reused")
    uptime: str | None = arg.str(None, "qpsmtpd's uptime program; accepted and ignored")

    def register(self, *args: str) -> None:
        """Set up the load source."""
        #: where the load comes from; tests replace it
        self.getloadavg: Callable[[], tuple[float, float, float]] = os.getloadavg
        self._cached: tuple[float, float] | None = None

    def load(self) -> float:
        """The 1-minute load average, cached for ``cache_time`` seconds."""
        now = self.clock.seconds()
        if self._cached is None or now - self._cached[0] >= self.cache_time:
            try:
                value = self.getloadavg()[0]
            except OSError:
                value = 0.0
            self._cached = (now, value)
        return self._cached[1]

    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        load = self.load()
        if load > self.max_load:
            self.log(LOGINFO, f"fail, load {load:.2f} > {self.max_load:g}")
            return DENYSOFT, "Server load too high, please try again later"
        self.log(LOGDEBUG, f"pass, load {load:.2f}")
        return DECLINED
