"""A message's header block as plugins see it, and the headers the engine adds.

:class:`Headers` keeps the fields as the client sent them, bytes for bytes,
with the edits of the engine and the plugins (prepend, add, remove, rename)
applied to those bytes: queueing copies them and never re-parses or
re-folds what it can copy. Reading decodes with the standard library's
modern :mod:`email.policy`: RFC 2047 encoded words (``=?UTF-8?B?...?=``) and
raw UTF-8 come back as ``str``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from email import policy
from email.utils import format_datetime
from typing import TYPE_CHECKING, TypeVar, overload

from qptwisted._version import __version__

if TYPE_CHECKING:
    from qptwisted.mail.connection import Connection

_T = TypeVar("_T")
# One field: a line and its continuation lines (LF endings, as the message is stored).
_FIELD = re.compile(rb"[^\n]*\n(?:[ \t][^\n]*\n)*")
_NAME = re.compile(r"[!-9;-~]+\Z")
# a CR, or a line break not followed by the white space that makes it a fold
_UNSAFE_BREAK = re.compile(r"\r|\n(?![ \t])")
# the names the engine itself adds on every message: no need to check them each time
_KNOWN_NAMES = frozenset({"Received", "Authentication-Results", "X-Original-Authentication-Results"})


def decode_value(name: str, raw: bytes) -> str:
    """A field's raw value as text: unfolded, RFC 2047 words decoded, 8-bit bytes read as UTF-8."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        return str(policy.default.header_fetch_parse(name, text))
    except Exception:  # a value the parser cannot take: the text as sent, unfolded
        return re.sub(r"\r?\n[ \t]+", " ", text)


class Headers:
    """The header fields of one message, in order, as bytes (LF line endings).

    Reads like :class:`email.message.Message` (``get``, ``get_all``,
    ``headers["Subject"]``, ``"From" in headers``, ``items()``), with decoded
    ``str`` values; field names compare case-insensitively.
    """

    __slots__ = ("_raw", "_prepended", "_fields")

    def __init__(self, raw: bytes = b"") -> None:
        if raw and not raw.endswith(b"\n"):
            raw += b"\n"
        self._raw = raw
        self._prepended: tuple[bytes, ...] = ()  # the empty tuple is shared: most headers get no field
        self._fields: list[bytes] | None = None

    # -- bytes ----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The fields as they will be stored (no blank line after them)."""
        if self._fields is None:
            return b"".join(self._prepended) + self._raw if self._prepended else self._raw
        return b"".join(self._fields)

    def __len__(self) -> int:
        return len(self._split())

    def _split(self) -> list[bytes]:
        if self._fields is None:
            self._fields = [*self._prepended, *_FIELD.findall(self._raw)]
            self._prepended = ()
            self._raw = b""
        return self._fields

    @staticmethod
    def _name_of(field: bytes) -> str:
        colon = field.find(b":")
        return field[: colon if colon >= 0 else len(field)].strip().decode("ascii", "replace")

    def _matches(self, name: str) -> Iterator[tuple[int, bytes]]:
        wanted = name.lower()
        for index, field in enumerate(self._split()):
            if self._name_of(field).lower() == wanted:
                yield index, field

    # -- reading --------------------------------------------------------------
    def raw_values(self, name: str) -> list[bytes]:
        """The raw values of every ``name`` field, as received (folding kept)."""
        return [field[field.find(b":") + 1:] for _, field in self._matches(name)]

    def raw_items(self) -> list[tuple[str, bytes]]:
        """``(name, raw value)`` for every field in order, the value as received (folding kept)."""
        return [(self._name_of(field), field[field.find(b":") + 1:]) for field in self._split()]

    @overload
    def get_all(self, name: str) -> list[str] | None: ...

    @overload
    def get_all(self, name: str, default: _T) -> list[str] | _T: ...

    def get_all(self, name: str, default: object = None) -> object:
        """Every value of ``name``, decoded; ``default`` when there is none."""
        values = [decode_value(name, raw) for raw in self.raw_values(name)]
        return values if values else default

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: _T) -> str | _T: ...

    def get(self, name: str, default: object = None) -> object:
        """The first value of ``name``, decoded; ``default`` when there is none."""
        for _, field in self._matches(name):
            return decode_value(name, field[field.find(b":") + 1:])
        return default

    def __getitem__(self, name: str) -> str | None:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(True for _ in self._matches(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:
        """The field names, in order (with repeats)."""
        return [self._name_of(field) for field in self._split()]

    def values(self) -> list[str]:
        """The decoded values, in order."""
        return [value for _, value in self.items()]

    def items(self) -> list[tuple[str, str]]:
        """``(name, decoded value)`` pairs, in order."""
        out = []
        for field in self._split():
            name = self._name_of(field)
            out.append((name, decode_value(name, field[field.find(b":") + 1:])))
        return out

    # -- editing --------------------------------------------------------------
    @staticmethod
    def _field(name: str, value: str) -> bytes:
        if name not in _KNOWN_NAMES and not _NAME.match(name):
            raise ValueError(f"not a header field name: {name!r}")
        if _UNSAFE_BREAK.search(value):
            # a value may be folded with "\n\t"; it may not smuggle in a line that starts a new field
            lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            value = "\n".join([lines[0]] + [line if line[:1] in (" ", "\t") else "\t" + line
                                            for line in lines[1:]])
        return f"{name}: {value}\n".encode()

    def prepend(self, name: str, value: str) -> None:
        """Put a field above all others (Received, Authentication-Results)."""
        field = self._field(name, value)
        if self._fields is None:
            self._prepended = (field, *self._prepended)
        else:
            self._fields.insert(0, field)

    def add(self, name: str, value: str) -> None:
        """Append a field after all others."""
        self._split().append(self._field(name, value))

    def insert(self, index: int, name: str, value: str) -> None:
        """Put a field at position ``index`` among all fields (0: the top; past the end: the last)."""
        fields = self._split()
        fields.insert(max(0, index), self._field(name, value))

    def remove(self, name: str, where: Callable[[str], bool] | None = None,
               occurrence: int | None = None) -> int:
        """Remove every ``name`` field (whose decoded value satisfies ``where``); how many went.

        ``occurrence`` (1 for the first) removes only that one of the ``name`` fields.
        """
        matches = list(self._matches(name))
        if occurrence is not None:
            matches = matches[occurrence - 1:occurrence] if occurrence >= 1 else []
        gone = [index for index, field in matches
                if where is None or where(decode_value(name, field[field.find(b":") + 1:]))]
        fields = self._split()
        for index in reversed(gone):
            del fields[index]
        return len(gone)

    def __delitem__(self, name: str) -> None:
        self.remove(name)

    def replace(self, name: str, value: str, occurrence: int = 1) -> None:
        """Replace the first (or the ``occurrence``-th) ``name`` field, keeping its place; else add one."""
        for seen, (index, _) in enumerate(self._matches(name), 1):
            if seen == occurrence:
                self._split()[index] = self._field(name, value)
                return
        self.add(name, value)

    def rename(self, name: str, new_name: str, where: Callable[[str], bool] | None = None) -> int:
        """Rename ``name`` fields (those whose decoded value satisfies ``where``), bytes kept."""
        if not _NAME.match(new_name):
            raise ValueError(f"not a header field name: {new_name!r}")
        fields = self._split()
        renamed = 0
        for index, field in list(self._matches(name)):
            colon = field.find(b":")
            if where is None or where(decode_value(name, field[colon + 1:])):
                fields[index] = new_name.encode() + field[colon:]
                renamed += 1
        return renamed


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


def authentication_results(authserv_id: str, connection: Connection, results: list[str]) -> str:
    """The value of our Authentication-Results header, from results plugins stored."""
    found: list[str] = []
    if connection.auth_user:
        mechanism = (connection.auth_mechanism or "").lower()
        found.append(f"auth=pass ({mechanism}) smtp.auth={connection.auth_user}")
    found.extend(connection.auth_results)
    found.extend(results)
    return f"{authserv_id}; " + (";\n\t".join(found) if found else "none")


def neutralize_forged_results(authserv_id: str, headers: Headers, raw: bytes) -> None:
    """Rename incoming Authentication-Results that claim to be ours (RFC 8601 §5)."""
    if _AUTH_RESULTS.search(raw) is None:  # most messages carry none: no copy, no decoding
        return
    wanted = authserv_id.lower()
    headers.rename("Authentication-Results", "X-Original-Authentication-Results",
                   lambda value: re.split(r"[\s;]", value.strip(), maxsplit=1)[0].lower() == wanted)


_AUTH_RESULTS = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE | re.MULTILINE)

# Complete header lines: "name:" fields and continuation lines (LF endings).
_HEADER_LINES = re.compile(rb"(?:[!-9;-~]+:[^\n]*\n|[ \t][^\n]*\n)*")


class HeaderSplitter:
    """Finds where the header block ends in a message that arrives piece by piece.

    The header ends at the blank line (dropped) or at the first complete line
    that is not a header line (kept as body: a message without a separator
    keeps all its lines). Each piece is scanned once, so a header sent one
    line per packet costs no more than one sent at once.
    """

    __slots__ = ("_buffer", "_scanned")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0

    @property
    def size(self) -> int:
        """Bytes held so far."""
        return len(self._buffer)

    def feed(self, data: bytes, final: bool = False) -> tuple[bytes, bytes] | None:
        """Add ``data``; ``(header, body start)`` once the header block ended, else None.

        With ``final`` (the message ended) the split is made whatever was seen.
        """
        buffer = self._buffer
        buffer += data
        if self._scanned == 0 and buffer[:1] in (b" ", b"\t"):
            end = 0  # a continuation line cannot start a header: no header at all
        else:
            end = _HEADER_LINES.match(buffer, self._scanned).end()  # type: ignore[union-attr]
        if end < len(buffer) and (final or buffer.find(b"\n", end) >= 0):
            header = bytes(buffer[:end])
            body = bytes(buffer[end + 1:] if buffer[end:end + 1] == b"\n" else buffer[end:])
            return header, body
        if final:
            return bytes(buffer), b""
        self._scanned = end
        return None


def split_header(message: bytes) -> tuple[bytes, bytes]:
    """A whole message (LF endings) split into header block and body."""
    split = HeaderSplitter().feed(message, final=True)
    assert split is not None
    return split
