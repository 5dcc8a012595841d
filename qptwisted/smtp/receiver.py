"""Receiving one message: the DATA and BDAT framers, and the receiver that owns a message while it arrives.

DATA: only ``<CRLF>.<CRLF>`` ends a message. Bare CR or LF anywhere in the body is
noted (the message is then refused), so ``<LF>.<LF>``, ``<LF>.<CR><LF>`` and
``<CR>.<CR>`` can never end it: no SMTP smuggling. Lines are turned into LF
line endings and dot-unstuffed (RFC 5321 4.5.2) with ``bytes`` methods on whole chunks; there
is no per-line Python loop.

BDAT (RFC 3030): each chunk is exactly the octets its command announced;
there is no terminator, so no dot handling and nothing to smuggle, no line
length limit, and bare CR or LF are data. CRLF still becomes LF (the stored
form), except in the body of a ``BINARYMIME`` message, which is kept as it came.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from qptwisted.core.replies import FAULT, Reply
from qptwisted.core.settings import Settings
from qptwisted.mail.headers import HeaderSplitter
from qptwisted.mail.transaction import Transaction

#: the longest partial line kept when lines have no length limit
HARD_LINE_LIMIT = 1 << 20


# a dot at the start of a line (not the first of the text): stuffed, or the terminator's; rare
# inside a message, so one search over a chunk usually rules out both (a regular expression
# finds it faster than ``in`` or ``find``)
_LINE_DOT = re.compile(rb"\n\.")
_CRLF = re.compile(rb"\r\n")


def has_long_line(text: bytes, limit: int) -> bool:
    """True if a line of ``text`` (LF endings, ending in LF) is longer than ``limit`` bytes.

    Instead of splitting the text into lines (an object per line), it looks
    at one byte every ``limit`` bytes: a longer line must contain one of
    them, and the line around each is measured with two C-level searches.
    """
    size = len(text)
    position = limit
    while position < size:
        start = text.rfind(b"\n", 0, position) + 1
        end = text.find(b"\n", position)
        if end < 0:
            end = size
        if end - start > limit:
            return True
        position = max(position + limit, end + 1)
    return False


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
        # The terminator contains a line-start dot: without one there is neither a terminator
        # nor a stuffed dot past the first line, and the chunk needs no further search.
        dot = _LINE_DOT.search(buf)
        first_dot = len(buf) if dot is None else dot.start()
        end = -1 if dot is None else buf.find(b"\r\n.\r\n", max(first_dot - 1, 0))
        if end >= 0:
            self._partial = b""
            self._process(buf[: end + 2], first_dot < end)
            return buf[end + 5 :]
        last = buf.rfind(b"\r\n")
        if last < 0:
            partial = buf
        else:
            partial = buf[last + 2 :]
            self._process(buf[: last + 2], first_dot < last)
        if len(partial) > self.max_line + 1:
            # A line this long is refused anyway (even after removing a stuffed dot); keep one
            # byte to see a CR before LF.
            self.long_line = True
            self._mid_line = True
            partial = partial[-1:]
        self._partial = partial
        return None

    def _process(self, lines: bytes, dots: bool) -> None:
        """Store whole lines (``lines`` ends in CRLF); ``dots``: a later line may start with a dot."""
        if self._mid_line:
            lines = lines[lines.find(b"\r\n") + 2 :]
            self._mid_line = False
            if not lines:
                return
        # Whole-chunk C-level passes, chosen by measuring. ``splitlines`` breaks at CRLF, and also
        # at a bare CR or LF: a break of one byte instead of two, which the lengths give away.
        parts = lines.splitlines()
        count = len(parts)
        parts.append(b"")
        out = b"\n".join(parts)
        if len(lines) != len(out) + count:
            self.bare_newline = True  # a bare CR or LF never ends a message: no SMTP smuggling
        # RFC 5321 4.5.3.1.6: the limit does not count the dot added for transparency (so a
        # line over it is measured again after unstuffing)
        limit = self.max_line - 2
        long_line = not self.long_line and len(out) > limit + 1 and max(map(len, parts)) > limit
        # RFC 5321 4.5.2: the first of a line's leading dots is always deleted
        if out[:1] == b".":
            out = out[1:]
        if dots and _LINE_DOT.search(out) is not None:
            out = out.replace(b"\n.", b"\n")
        if long_line:
            self.long_line = has_long_line(out, limit)
        self.size += len(out)
        if self.too_big:
            return
        if self.databytes and self.size > self.databytes:
            self.too_big = True
            return
        self.sink(out)


class ChunkReader:
    """Consumes BDAT chunks (RFC 3030): exactly the octets each ``BDAT`` announced.

    :meth:`expect` announces the next chunk; :meth:`feed` passes on at most
    that many octets and returns the bytes after the chunk once it is
    complete; :meth:`finish` ends the message. ``sink`` receives the message
    in the stored form (CRLF becomes LF, also across chunk boundaries); with
    ``binary`` it receives the octets unchanged. ``size`` counts octets as
    sent; the session refuses a chunk that would pass ``databytes`` before
    reading it, so the line and newline flags of :class:`DataReader` stay false.
    """

    __slots__ = ("sink", "databytes", "binary", "max_line", "size", "remaining", "too_big",
                 "bare_newline", "long_line", "_cr")

    def __init__(self, sink: Callable[[bytes], object], databytes: int = 0, binary: bool = False) -> None:
        self.sink = sink
        self.databytes = databytes
        self.binary = binary
        self.max_line = 0
        self.size = 0
        self.remaining = 0
        self.too_big = False
        self.bare_newline = False
        self.long_line = False
        self._cr = False  # a CR ended the last piece: it may start a CRLF

    def expect(self, octets: int) -> None:
        """The next chunk has ``octets`` octets."""
        self.remaining = octets

    def feed(self, data: bytes) -> bytes | None:
        """Take ``data``; return what follows the chunk once it is complete, else None."""
        remaining = self.remaining
        if len(data) > remaining:
            data, rest = data[:remaining], data[remaining:]
        else:
            rest = b""
        self.remaining = remaining - len(data)
        self.size += len(data)
        if data:
            self._deliver(data)
        return rest if self.remaining == 0 else None

    def finish(self) -> None:
        """The last chunk arrived: a CR held back is data."""
        if self._cr:
            self._cr = False
            self.sink(b"\r")

    def _deliver(self, data: bytes) -> None:
        if self.binary:
            self.sink(data)
            return
        if self._cr:
            data = b"\r" + data
        self._cr = data[-1:] == b"\r"
        if self._cr:
            data = data[:-1]
        data = b"\n".join(_CRLF.split(data))  # measured: twice as fast as ``replace``
        if data:
            self.sink(data)


class Receiver(Protocol):
    """What the protocol feeds while a message or a BDAT chunk arrives."""

    #: a hook chain still running; the protocol stops reading until it fires
    waiting: Deferred[Any] | None
    #: the bytes after what was to be read, once it is complete
    rest: bytes | None

    @property
    def complete(self) -> bool:
        """True once everything to be read has arrived."""

    def feed(self, data: bytes) -> Deferred[Any] | None:
        """Take bytes from the wire; a Deferred asks the caller to wait before feeding more."""


class ChunkDiscarder:
    """Reads one BDAT chunk and drops it: the chunk of a refused BDAT must still be read (RFC 3030 §2).

    ``reply`` is what the BDAT command gets once the chunk is read (None:
    it was answered already).
    """

    __slots__ = ("remaining", "last", "reply", "rest", "waiting")

    def __init__(self, octets: int, last: bool, reply: Reply | None) -> None:
        self.remaining = octets
        self.last = last
        self.reply = reply
        self.rest: bytes | None = b"" if octets == 0 else None
        self.waiting: Deferred[Any] | None = None

    @property
    def complete(self) -> bool:
        """True once the whole chunk was read."""
        return self.rest is not None

    def feed(self, data: bytes) -> Deferred[Any] | None:
        """Drop up to the rest of the chunk; keep what follows it."""
        if len(data) >= self.remaining:
            self.rest = data[self.remaining:]
            self.remaining = 0
        else:
            self.remaining -= len(data)
        return None


class MessageReceiver:
    """Owns one message while it arrives after ``354`` or in BDAT chunks (shaped like ``IMessageSMTP``).

    :meth:`feed` takes the bytes of the wire and may return a Deferred to
    wait on (a ``data_headers_end`` chain is running); once :attr:`complete`,
    :attr:`rest` holds the bytes after the terminator and :meth:`verdict`
    says whether the message must be refused; :meth:`abort` drops it. The
    receiver frames the message (:class:`DataReader`, or with ``chunked``
    a :class:`ChunkReader`), splits the header block off, spools the body
    into the transaction and notes what was wrong (bare newlines, long lines,
    size, header size, a spool error).

    One chunked receiver serves a whole BDAT sequence: :meth:`expect`
    announces each chunk, and :attr:`complete` then means "this chunk
    arrived"; the message is complete when the chunk announced ``last`` is.
    """

    __slots__ = ("transaction", "reader", "max_header", "header_too_large", "spool_error", "waiting",
                 "rest", "fault", "last", "_splitter", "_headers_end")

    def __init__(self, transaction: Transaction, settings: Settings,
                 headers_end: Callable[[MessageReceiver], Deferred[Any] | None] | None = None, *,
                 chunked: bool = False, databytes: int | None = None) -> None:
        self.transaction = transaction
        limit = settings.databytes if databytes is None else databytes
        self.reader: DataReader | ChunkReader = (
            ChunkReader(self._piece, limit, transaction.binary) if chunked
            else DataReader(self._piece, limit, settings.max_line_length))
        self.max_header = settings.max_header_size
        self.header_too_large = False
        self.spool_error: OSError | None = None
        #: a ``data_headers_end`` chain still running; the message's end waits for it
        self.waiting: Deferred[Any] | None = None
        #: the bytes after the terminator, once the message is complete
        self.rest: bytes | None = None
        #: a plugin broke while the message arrived: it is refused (451) once it is complete
        self.fault = False
        #: the chunk being read is the last one (BDAT ... LAST); always true for DATA
        self.last = not chunked
        self._splitter: HeaderSplitter | None = HeaderSplitter()
        self._headers_end = headers_end

    @property
    def complete(self) -> bool:
        """True once the terminator (or the BDAT chunk being read) arrived."""
        return self.rest is not None

    @property
    def chunked(self) -> bool:
        """True for a message sent with BDAT."""
        return isinstance(self.reader, ChunkReader)

    @property
    def room(self) -> int | None:
        """Octets the message may still grow by (None: no limit)."""
        reader = self.reader
        return max(reader.databytes - reader.size, 0) if reader.databytes else None

    def expect(self, octets: int, last: bool) -> None:
        """BDAT: the next chunk has ``octets`` octets, and is the last one if ``last``."""
        assert isinstance(self.reader, ChunkReader)
        self.reader.expect(octets)
        self.last = last
        self.rest = None

    def feed(self, data: bytes) -> Deferred[Any] | None:
        """Take bytes from the wire; a Deferred asks the caller to wait before feeding more."""
        reader = self.reader
        rest = reader.feed(data)
        if rest is not None:
            self.rest = rest
            if not self.last:
                return self.waiting
            if isinstance(reader, ChunkReader):
                reader.finish()
            if self._splitter is not None:  # the header block ends with the message
                header, body = self._splitter.feed(b"", final=True)  # type: ignore[misc]
                self._end_header(header, body)
        return self.waiting

    def _piece(self, data: bytes) -> None:
        splitter = self._splitter
        if splitter is not None:
            split = splitter.feed(data)
            if split is None:
                if splitter.size > self.max_header:
                    self.header_too_large = True
                    self._end_header(b"", b"")
                return
            self._end_header(*split)
            return
        if self.spool_error is None:
            try:
                self.transaction.body_write(data)
            except OSError as err:
                self.spool_error = err

    def _end_header(self, header: bytes, body: bytes) -> None:
        self._splitter = None
        if self.transaction.binary:
            # the splitter saw the octets as sent: the header block gets the stored form, the body not
            header = header.replace(b"\r\n", b"\n")
            if body[:2] == b"\r\n":
                body = body[2:]
        if len(header) > self.max_header:
            self.header_too_large = True
            header = b""
        self.transaction.raw_header = header
        if body:
            self._piece(body)
        if self._headers_end is not None:
            step = self._headers_end(self)
            if step is not None:
                self.waiting = step
                step.addBoth(self._done_waiting)

    def _done_waiting(self, result: object) -> object:
        self.waiting = None
        return result

    def verdict(self) -> Reply | None:
        """The reply that refuses the message, or None when it may go on to ``data_post``."""
        reader = self.reader
        self.transaction.data_size = reader.size
        if reader.bare_newline:
            return Reply(550, "5.6.0", "Message contains bare CR or LF characters (RFC 5321 2.3.8)")
        if reader.long_line:
            return Reply(500, "5.5.2", f"Message has a line longer than {reader.max_line} bytes")
        if reader.too_big:
            return Reply(552, "5.3.4", "Message too big!")
        if self.header_too_large:
            return Reply(552, "5.3.4", "Message header too large")
        if self.spool_error is not None:
            return Reply(452, "4.3.1", "Insufficient system storage, try again later")
        if self.fault:
            return FAULT
        return None

    def abort(self) -> None:
        """The connection ended inside the message: drop what arrived."""
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.cancel()
        self.transaction.close()
