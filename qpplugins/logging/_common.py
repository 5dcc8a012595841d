"""What the stock loggers share: argument parsing and the ids of the current connection."""

from __future__ import annotations

from typing import Any

LEVEL_NAMES = ("EMERG", "ALERT", "CRIT", "ERROR", "WARN", "NOTICE", "INFO", "DEBUG")


def level_argument(args: tuple[str, ...], default: int) -> int:
    """``[loglevel] N`` or nothing: the highest level to write."""
    words = [word for word in args if word.lower() != "loglevel"]
    if len(words) > 1:
        raise ValueError(f"expected '[loglevel] N', got {list(args)}")
    return int(words[0]) if words else default


def ids(transaction: Any) -> tuple[int | None, int | None, str | None]:
    """``(connection id, transaction id, remote ip)`` of the hook being run, if any."""
    if transaction is None:
        return None, None, None
    connection = getattr(transaction, "connection", None)
    if connection is None:
        return None, getattr(transaction, "id", None), None
    return connection.id, transaction.id, connection.remote_ip
