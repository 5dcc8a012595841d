"""Headers the engine adds after DATA: Received (RFC 5321/3848) and
Authentication-Results (RFC 8601), and the header-block splitter."""

from __future__ import annotations

import re
import time
from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING

from qptwisted._version import __version__

if TYPE_CHECKING:
    from qptwisted.mail.connection import Connection
    from qptwisted.mail.transaction import Transaction

# A run of complete header lines: a field name and colon, then continuation lines.
_HEADER_LINES = re.compile(rb"(?:[!-9;-~]+:[^\n]*\n(?:[ \t][^\n]*\n)*)*")


def split_header(buffer: bytes, final: bool = False) -> tuple[bytes, bytes] | None:
    """Split LF-ended lines into (header block, body) once the header ends.

    The header ends at the blank line (dropped) or at the first line that is
    not a header line (kept as body: a message without a separator keeps all
    its lines). Returns None while every line so far is a header line, unless
    ``final`` is set.
    """
    end = _HEADER_LINES.match(buffer).end()  # type: ignore[union-attr]
    if end < len(buffer):
        if buffer[end : end + 1] == b"\n":
            return buffer[:end], buffer[end + 1 :]
        return buffer[:end], buffer[end:]
    return (buffer, b"") if final else None


def received_line(me: str, connection: Connection) -> str:
    """The value of our Received header, qpsmtpd's layout with RFC 3848 protocols."""
    tls = connection.tls
    cipher = f" ({tls.version}:{tls.cipher} encrypted)" if tls else ""
    return (f"from {connection.remote_info} (HELO {connection.hello_host}) ({connection.remote_ip})\n"
            f"\tby {me} (qptwisted/{__version__}) with {connection.protocol}{cipher}; {_now()}")


_date: tuple[int, str] = (-1, "")


def _now() -> str:
    """The RFC 5322 date of this second (formatted once per second, not per message)."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, format_datetime(datetime.fromtimestamp(second).astimezone()))
    return _date[1]


def authentication_results(authserv_id: str, transaction: Transaction) -> str:
    """The value of our Authentication-Results header, from results plugins stored."""
    connection = transaction.connection
    results: list[str] = []
    if connection.auth_user:
        mechanism = (connection.auth_mechanism or "").lower()
        results.append(f"auth=pass ({mechanism}) smtp.auth={connection.auth_user}")
    results.extend(connection.auth_results)
    results.extend(transaction.auth_results)
    return f"{authserv_id}; " + (";\n\t".join(results) if results else "none")


def neutralize_forged_results(authserv_id: str, transaction: Transaction) -> None:
    """Rename incoming Authentication-Results that claim to be ours (RFC 8601 §5)."""
    if b"authentication-results" not in transaction.raw_header.lower():
        return
    header = transaction.header
    items = header._headers  # type: ignore[attr-defined]
    wanted = authserv_id.lower()
    for index, (name, value) in enumerate(items):
        if name.lower() == "authentication-results" and \
                re.split(r"[\s;]", value.strip(), maxsplit=1)[0].lower() == wanted:
            items[index] = ("X-Original-Authentication-Results", value)
