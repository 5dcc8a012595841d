"""random_error: fail at random, to test how clients cope with errors.

Fault injection for testing clients, never for a production server: at
connect, HELO/EHLO, MAIL, RCPT, DATA and after DATA the plugin answers
``DENYSOFT random failure`` (three times in five
``DENYSOFT_DISCONNECT`` instead) with the given probability.

Argument: the percentage (default 1; also written ``percent N``). The connection note ``random_fail_%``
overrides it per connection (another plugin may set it at connect).

config/plugins::

    random_error 5
"""

from __future__ import annotations

import random
from typing import Any

from qptwisted import DECLINED, DENYSOFT, DENYSOFT_DISCONNECT, LOGINFO, HookAnswer, Plugin, Transaction, arg

PHASES = ("connect", "helo", "ehlo", "mail", "rcpt", "data", "data_post")


class RandomError(Plugin):
    """Answer DENYSOFT at random."""

    name = "random_error"
    percent: float = arg.float(1.0, "the probability of a failure, in percent", positional=True)

    def register(self, *args: str) -> None:
        """Hook every phase."""
        #: the random source; tests give a seeded ``random.Random``
        self.random = random.Random()
        for phase in PHASES:
            self.register_hook(phase, self.random_fail)

    def random_fail(self, transaction: Transaction, *args: Any, **kwargs: Any) -> HookAnswer:
        """Fail with the configured probability."""
        notes = transaction.connection.notes
        percent = float(notes.setdefault("random_fail_%", self.percent))
        if self.random.random() * 100 >= percent:
            return DECLINED
        if self.random.random() * 5 > 2:
            self.log(LOGINFO, "DENYSOFT_DISCONNECT")
            return DENYSOFT_DISCONNECT, "random failure"
        self.log(LOGINFO, "DENYSOFT")
        return DENYSOFT, "random failure"
