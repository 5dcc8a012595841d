"""Per-transaction state: envelope, headers, body and notes."""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from email import policy
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING, Any, BinaryIO

from qptwisted.mail.spool import MessageSpool

if TYPE_CHECKING:
    from qptwisted.mail.address import Address
    from qptwisted.mail.connection import Connection

_ids = itertools.count(1)
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_PARSER = BytesHeaderParser(policy=policy.compat32)


class Transaction:
    """One mail transaction (MAIL ... end of DATA), qpsmtpd's ``Qpsmtpd::Transaction``.

    The message is kept as header bytes plus a body spool, with LF line
    endings and dots unstuffed. ``header`` parses the header block with the
    stdlib :mod:`email` package the first time a plugin asks for it; a plugin
    that never asks costs no parsing.
    """

    __slots__ = ("connection", "sender", "recipients", "notes", "auth_results", "id",
                 "raw_header", "_header", "_prepended", "body", "data_size", "_spool_args")

    def __init__(self, connection: Connection, spool_dir: str = "spool/tmp",
                 size_threshold: int = 1 << 20) -> None:
        self.connection = connection
        self.sender: Address | None = None
        self.recipients: list[Address] = []
        self.notes: dict[str, Any] = {}
        self.auth_results: list[str] = []
        self.id = next(_ids)
        self.raw_header = b""
        self._header: Message | None = None
        self._prepended: list[bytes] = []
        self._spool_args = (spool_dir, size_threshold)
        self.body: MessageSpool | None = None
        self.data_size = 0

    # -- envelope ---------------------------------------------------------
    def add_recipient(self, address: Address) -> None:
        """Add an accepted recipient."""
        self.recipients.append(address)

    def remove_recipient(self, address: Address) -> None:
        """Drop a recipient (compared by canonical address)."""
        self.recipients = [r for r in self.recipients if r.canonical != address.canonical]

    # -- headers ----------------------------------------------------------
    @property
    def header(self) -> Message:
        """The message header as an :class:`email.message.Message` (no payload)."""
        if self._header is None:
            self._header = _PARSER.parsebytes(b"".join(self._prepended) + self.raw_header)
            self._prepended = []
        return self._header

    def prepend_header(self, name: str, value: str) -> None:
        """Put a header above all others (Received, Authentication-Results)."""
        if self._header is None:
            self._prepended.insert(0, f"{name}: {value}\n".encode())
        else:
            self._header._headers.insert(0, (name, value))  # type: ignore[attr-defined]

    def header_bytes(self) -> bytes:
        """The header block as it will be stored, ending in the blank line."""
        if self._header is None:
            return b"".join(self._prepended) + self.raw_header + b"\n"
        out = io.BytesIO()
        BytesGenerator(out, mangle_from_=False, maxheaderlen=0).flatten(self._header)
        return out.getvalue()

    @property
    def message_id(self) -> str | None:
        """The Message-Id header, without parsing the whole header block."""
        if self._header is not None:
            value = self._header.get("Message-Id")
            return None if value is None else str(value).strip()
        match = _MESSAGE_ID.search(self.raw_header)
        return match.group(1).strip().decode("utf-8", "replace") if match else None

    # -- body -------------------------------------------------------------
    def body_write(self, data: bytes) -> None:
        """Append body bytes (LF line endings)."""
        if self.body is None:
            self.body = MessageSpool(*self._spool_args)
        self.body.write(data)

    @property
    def body_length(self) -> int:
        """Bytes of body after the header block."""
        return 0 if self.body is None else self.body.size

    def body_bytes(self) -> bytes:
        """The whole body; for small messages or plugins that need it all."""
        return b"" if self.body is None else self.body.getvalue()

    def body_fh(self) -> BinaryIO:
        """A fresh read handle on the body."""
        return self.body.open() if self.body is not None else io.BytesIO()

    def body_filename(self) -> str:
        """The body as a file on disk (spools it if it was in memory)."""
        if self.body is None:
            self.body = MessageSpool(*self._spool_args)
        return self.body.to_file()

    def iter_message(self) -> Iterator[bytes]:
        """The stored message (headers, blank line, body) in chunks, LF endings."""
        yield self.header_bytes()
        if self.body is not None:
            yield from self.body.iter_chunks()

    def message_bytes(self) -> bytes:
        """The stored message as one bytes object."""
        return b"".join(self.iter_message())

    def close(self) -> None:
        """Release the body spool and its file."""
        if self.body is not None:
            self.body.close()
            self.body = None
