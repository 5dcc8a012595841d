"""Per-transaction state: envelope, headers, body and notes."""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from qptwisted.mail.headers import Headers
from qptwisted.mail.ondemand import OnDemand
from qptwisted.mail.spool import MessageSpool

if TYPE_CHECKING:
    from qptwisted.mail.address import Address
    from qptwisted.mail.connection import Connection
    from qptwisted.mail.dsn import MessageDSN

_ids = itertools.count(1)
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


class Transaction:
    """One mail transaction (MAIL ... end of DATA), qpsmtpd's ``Qpsmtpd::Transaction``.

    The message is kept as header fields plus a body spool, with LF line
    endings and dots unstuffed. ``header`` is a :class:`~qptwisted.mail.headers.Headers`:
    decoded ``str`` values to read, edits applied to the bytes as received;
    ``raw_header`` is the header block exactly as the client sent it.

    The ESMTP envelope (``docs/esmtp.md``): ``dsn`` holds MAIL's ``RET`` and
    ``ENVID`` (RFC 3461; each recipient's ``NOTIFY``/``ORCPT`` is on the
    recipient), ``requiretls`` the client's REQUIRETLS (RFC 8689),
    ``body_type`` MAIL's ``BODY`` (upper-cased, None if not given) and
    ``policy_group`` the group the first accepted recipient fixed. A
    ``BINARYMIME`` message (:attr:`binary`) keeps its body exactly as it
    arrived, with CRLF line endings; only its header block has LF endings.
    """

    __slots__ = ("connection", "sender", "recipients", "_notes", "_auth_results", "id",
                 "_raw_header", "header", "body", "data_size", "_spool_dir", "_size_threshold",
                 "dsn", "requiretls", "body_type", "policy_group")

    #: what plugins note for the rest of the transaction (a dict, made when first used)
    notes: OnDemand[dict[str, Any]] = OnDemand(dict)
    #: RFC 8601 results for the Authentication-Results header (a list, made when first used)
    auth_results: OnDemand[list[str]] = OnDemand(list)

    def __init__(self, connection: Connection, spool_dir: str = "spool/tmp",
                 size_threshold: int = 1 << 20) -> None:
        self.connection = connection
        self.sender: Address | None = None
        self.recipients: list[Address] = []
        self._notes: dict[str, Any] | None = None
        self._auth_results: list[str] | None = None
        self.id = next(_ids)
        self._raw_header = b""
        self.header = Headers()
        self._spool_dir, self._size_threshold = spool_dir, size_threshold
        self.body: MessageSpool | None = None
        self.data_size = 0
        self.dsn: MessageDSN | None = None
        self.requiretls = False
        self.body_type: str | None = None
        self.policy_group: str | None = None

    # -- envelope ---------------------------------------------------------
    def add_recipient(self, address: Address) -> None:
        """Add an accepted recipient."""
        self.recipients.append(address)

    def remove_recipient(self, address: Address) -> None:
        """Drop a recipient (compared by canonical address)."""
        self.recipients = [r for r in self.recipients if r.canonical != address.canonical]

    @property
    def binary(self) -> bool:
        """True for a ``BODY=BINARYMIME`` message (RFC 3030): its body is raw octets, CRLF endings."""
        return self.body_type == "BINARYMIME"

    # -- headers ----------------------------------------------------------
    @property
    def raw_header(self) -> bytes:
        """The header block as the client sent it (LF endings, no blank line)."""
        return self._raw_header

    @raw_header.setter
    def raw_header(self, raw: bytes) -> None:
        self._raw_header = raw
        self.header = Headers(raw)

    def prepend_header(self, name: str, value: str) -> None:
        """Put a header above all others (Received, Authentication-Results)."""
        self.header.prepend(name, value)

    def header_bytes(self) -> bytes:
        """The header block as it will be stored, ending in the blank line."""
        return self.header.to_bytes() + b"\n"

    @property
    def message_id(self) -> str | None:
        """The Message-Id header (found without decoding the header block)."""
        match = _MESSAGE_ID.search(self.header.to_bytes())
        return match.group(1).strip().decode("utf-8", "replace") if match else None

    # -- body -------------------------------------------------------------
    def body_write(self, data: bytes) -> None:
        """Append body bytes (LF line endings)."""
        if self.body is None:
            self.body = MessageSpool(self._spool_dir, self._size_threshold)
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
            self.body = MessageSpool(self._spool_dir, self._size_threshold)
        return self.body.to_file()

    def iter_message(self, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """The stored message (headers, blank line, body) in chunks of at most ``chunk_size``, LF endings.

        A spooled body is read from its file as the iteration goes, so a
        consumer on the thread pool (a queue plugin) never holds the message whole.
        """
        yield self.header_bytes()
        if self.body is not None:
            yield from self.body.iter_chunks(chunk_size)

    def message_bytes(self) -> bytes:
        """The stored message as one bytes object."""
        return b"".join(self.iter_message())

    def close(self) -> None:
        """Release the body spool and its file."""
        if self.body is not None:
            self.body.close()
            self.body = None
