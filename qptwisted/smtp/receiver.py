"""The DATA reader: frames a message body at C speed, chunk by chunk.

Only ``<CRLF>.<CRLF>`` ends a message. Bare CR or LF anywhere in the body is
noted (the message is then refused), so ``<LF>.<LF>``, ``<LF>.<CR><LF>`` and
``<CR>.<CR>`` can never end it: no SMTP smuggling. Lines are turned into LF
line endings and dot-unstuffed (RFC 5321 4.5.2) with ``bytes`` methods on whole chunks; there
is no per-line Python loop.
"""

from __future__ import annotations

from collections.abc import Callable

#: the longest partial line kept when lines have no length limit
HARD_LINE_LIMIT = 1 << 20


class DataReader:
    """Consumes the bytes after ``354`` until the end of the message.

    ``sink`` receives the message in pieces (LF endings, dots unstuffed)
    until ``databytes`` is passed; the flags say what was wrong with it.
    """

    __slots__ = ("sink", "databytes", "max_line", "size", "too_big", "bare_newline",
                 "long_line", "_partial", "_mid_line")

    def __init__(self, sink: Callable[[bytes], object], databytes: int = 0, max_line: int = 1000) -> None:
        self.sink = sink
        self.databytes = databytes
        self.max_line = max_line if max_line > 0 else HARD_LINE_LIMIT
        self.size = 0
        self.too_big = False
        self.bare_newline = False
        self.long_line = False
        self._partial = b""
        self._mid_line = False

    def feed(self, data: bytes) -> bytes | None:
        """Take ``data``; return the bytes after the terminator once it is seen, else None."""
        buf = self._partial + data if self._partial else data
        if not self._mid_line and buf[:3] == b".\r\n":
            self._partial = b""
            return buf[3:]
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            self._partial = b""
            self._process(buf[: end + 2])
            return buf[end + 5 :]
        last = buf.rfind(b"\r\n")
        if last < 0:
            partial = buf
        else:
            partial = buf[last + 2 :]
            self._process(buf[: last + 2])
        if len(partial) > self.max_line:
            # A line this long is refused anyway; keep one byte to see a CR before LF.
            self.long_line = True
            self._mid_line = True
            partial = partial[-1:]
        self._partial = partial
        return None

    def _process(self, lines: bytes) -> None:
        if self._mid_line:
            lines = lines[lines.find(b"\r\n") + 2 :]
            self._mid_line = False
            if not lines:
                return
        crlf = lines.count(b"\r\n")
        if lines.count(b"\n") != crlf or lines.count(b"\r") != crlf:
            self.bare_newline = True
        if len(lines) > self.max_line and not self.long_line:
            self.long_line = max(map(len, lines.split(b"\r\n"))) > self.max_line - 2
        out = lines.replace(b"\r\n", b"\n")
        # RFC 5321 4.5.2: the first of a line's leading dots is always deleted
        if out[:1] == b".":
            out = out[1:]
        if b"\n." in out:
            out = out.replace(b"\n.", b"\n")
        self.size += len(out)
        if self.too_big:
            return
        if self.databytes and self.size > self.databytes:
            self.too_big = True
            return
        self.sink(out)
