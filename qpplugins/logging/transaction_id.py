"""logging/transaction_id: log to stderr with ``connection.transaction`` ids.

Like ``logging/connection_id``, but the tag is ``[17.3]``: connection 17,
its transaction 3 (transaction ids are counted by the process).

Argument: ``[loglevel] N`` (default ``loglevel``).

config/logging::

    logging/transaction_id 6
"""

from __future__ import annotations

from ._common import TaggedLogger, ids


class TransactionId(TaggedLogger):
    """stderr logger tagged with connection and transaction ids."""

    name = "logging/transaction_id"

    def tag(self, transaction: object) -> str:
        """``[connection.transaction]``."""
        connection_id, transaction_id, _ = ids(transaction)
        if connection_id is None:
            return "[-]"
        return f"[{connection_id}.{transaction_id}]"
