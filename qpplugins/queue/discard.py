"""queue/discard: accept every message and throw it away (tests, benchmarks).

config/plugins::

    queue/discard
"""

from __future__ import annotations

from qptwisted import OK, Plugin, Transaction


class Discard(Plugin):
    """Answer 250 and keep nothing."""

    name = "queue/discard"

    def hook_queue(self, transaction: Transaction) -> object:
        return OK, "Queued (discarded)"
