"""queue/discard: accept every message and throw it away (tests, benchmarks).

No arguments.

config/plugins::

    queue/discard
"""

from __future__ import annotations

from qptwisted import OK, HookAnswer, Plugin, Transaction


class Discard(Plugin):
    """Answer 250 and keep nothing."""

    name = "queue/discard"
    strict_arguments = True

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        return OK, "Queued (discarded)"
