"""Handing a message to Postfix's ``cleanup`` service over its socket, as Postfix's own daemons do.

The protocol (Postfix's ``src/global/rec_type.h``, ``attr_print0``; qpsmtpd's
``Qpsmtpd::Postfix``):

1. on connect, ``cleanup`` sends attributes, each ``name\\0value\\0``, the
   group ended by an empty name (``\\0``): ``queue_id`` (Postfix 3 first
   announces ``protocol cleanup_protocol``);
2. the client answers with its ``flags`` attribute (``CLEANUP_FLAG_*``);
3. then records, each a type byte, the length as a little-endian base-128
   number, and the data: the arrival time, named attributes, the sender,
   the recipients, the start of the message, one record per line of the
   message (lines longer than :data:`CHUNK` continue in ``L`` records), the
   start of the extracted envelope, the end;
4. ``cleanup`` answers with the attributes ``status`` (a bit mask of
   ``CLEANUP_STAT_*``, 0 = queued) and ``reason``.

:func:`submit` does all of it on a Twisted endpoint, streaming the message
with flow control (memory never holds the whole message), and answers a
:class:`CleanupResult`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

#: the flags of ``src/global/cleanup_user.h`` (Postfix 2.3 and later), by qpsmtpd's names
FLAGS = {
    "FLAG_NONE": 0,
    "FLAG_BOUNCE": 1 << 0,
    "FLAG_FILTER": 1 << 1,
    "FLAG_HOLD": 1 << 2,
    "FLAG_DISCARD": 1 << 3,
    "FLAG_BCC_OK": 1 << 4,
    "FLAG_MAP_OK": 1 << 5,
    "FLAG_MILTER": 1 << 6,
}
FLAGS["FLAG_FILTER_ALL"] = FLAGS["FLAG_FILTER"] | FLAGS["FLAG_MILTER"]
FLAGS["FLAG_MASK_EXTERNAL"] = FLAGS["FLAG_FILTER_ALL"] | FLAGS["FLAG_BCC_OK"] | FLAGS["FLAG_MAP_OK"]
FLAGS["FLAG_MASK_INTERNAL"] = FLAGS["FLAG_MAP_OK"]
FLAGS["FLAG_MASK_EXTRA"] = FLAGS["FLAG_HOLD"] | FLAGS["FLAG_DISCARD"]

#: the status bits of ``cleanup``'s answer, and whether each means "try again later"
STAT_BAD, STAT_WRITE, STAT_SIZE, STAT_CONT, STAT_HOPS = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4
STAT_RCPT, STAT_PROXY, STAT_DEFER = 1 << 6, 1 << 7, 1 << 8
#: temporary failures, checked first (qpsmtpd's order): text and enhanced code when cleanup gives none
SOFT = {
    STAT_DEFER: "4.7.1 service unavailable",
    STAT_PROXY: "4.3.0 queue file write error",
    STAT_BAD: "4.3.0 internal protocol error",
    STAT_WRITE: "4.3.0 queue file write error",
}
#: permanent failures
HARD = {
    STAT_RCPT: "5.1.0 no recipients specified",
    STAT_HOPS: "5.4.0 too many hops",
    STAT_SIZE: "5.3.4 message file too big",
    STAT_CONT: "5.7.1 message content rejected",
}

#: record types (``rec_type.h``)
REC_TIME, REC_ATTR, REC_FROM, REC_RCPT, REC_MESG = b"T", b"A", b"S", b"R", b"M"
REC_CONT, REC_NORM, REC_XTRA, REC_END = b"L", b"N", b"X", b"E"
#: a message line longer than this is sent in pieces (``L`` records, then the last as ``N``)
CHUNK = 1024
#: the most we read of cleanup's attributes before calling it a protocol error
MAX_ATTRIBUTES = 65536


class CleanupError(Exception):
    """The conversation with ``cleanup`` failed (connection, protocol, timeout) before it answered."""


class CleanupUnreachable(CleanupError):
    """No connection to ``cleanup`` could be made: nothing was sent, another socket may be tried."""


@dataclass(frozen=True)
class CleanupResult:
    """What ``cleanup`` answered: its queue id, its status bits and its reason."""

    queue_id: str
    status: int
    reason: str = ""

    @property
    def queued(self) -> bool:
        """True when the message is in Postfix's queue."""
        return self.status == 0

    @property
    def temporary(self) -> bool:
        """True for a failure worth retrying (any bit of :data:`SOFT`, or an unknown one)."""
        return bool(self.status & sum(SOFT)) or not self.status & sum(HARD)

    def explanation(self) -> str:
        """The reason, or the text of the first status bit (``4.3.0 queue file write error``)."""
        if self.reason:
            return self.reason
        for table in (SOFT, HARD):
            for bit, text in table.items():
                if self.status & bit:
                    return text
        return f"4.3.0 unknown cleanup status {self.status}"


def parse_flags(words: Iterable[str]) -> tuple[int, list[str]]:
    """The ``flags`` value of ``FLAG_*`` names, and the names it does not know (qpsmtpd ignores those)."""
    value, unknown = 0, []
    for word in words:
        bit = FLAGS.get(word.upper())
        if bit is None:
            unknown.append(word)
        else:
            value |= bit
    return value, unknown


def record(kind: bytes, data: bytes = b"") -> bytes:
    """One record: type, length (little-endian base 128, high bit = more), data."""
    length = len(data)
    prefix = bytearray(kind)
    while length >= 0x80:
        prefix.append((length & 0x7F) | 0x80)
        length >>= 7
    prefix.append(length)
    return bytes(prefix) + data


def attributes(pairs: Sequence[tuple[str, str]]) -> bytes:
    """An attribute group: ``name\\0value\\0`` ... ``\\0``."""
    return b"".join(f"{name}\0{value}\0".encode() for name, value in pairs) + b"\0"


def message_records(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The message (LF line endings) as ``N`` records, long lines split into ``L`` records first."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        yield b"".join(_line_records(line) for line in lines)
    if pending:
        yield _line_records(pending)


def _line_records(line: bytes) -> bytes:
    line = line.removesuffix(b"\r")
    parts = []
    while len(line) > CHUNK:
        parts.append(record(REC_CONT, line[:CHUNK]))
        line = line[CHUNK:]
    parts.append(record(REC_NORM, line))
    return b"".join(parts)


@dataclass(frozen=True)
class Envelope:
    """What ``cleanup`` needs besides the message: sender, recipients, and attributes for its log."""

    sender: str
    recipients: Sequence[str]
    #: ``name=value`` attributes sent as ``A`` records (``rewrite_context``, ``log_client_address`` ...)
    attributes: Sequence[tuple[str, str]] = ()
    arrival: float | None = None

    def records(self) -> bytes:
        """The envelope records, up to the start of the message."""
        now = time.time() if self.arrival is None else self.arrival
        parts = [record(REC_TIME, f"{int(now)} {int((now % 1) * 1_000_000)}".encode())]
        parts += [record(REC_ATTR, f"{name}={value}".encode()) for name, value in self.attributes]
        parts.append(record(REC_FROM, self.sender.encode("utf-8")))
        parts += [record(REC_RCPT, rcpt.encode("utf-8")) for rcpt in self.recipients]
        parts.append(record(REC_MESG))
        return b"".join(parts)


@implementer(IPushProducer)
class CleanupProtocol(Protocol):
    """One submission: read the queue id, send flags, envelope and message, read the status."""

    def __init__(self, flags: int, envelope: Envelope, message: Iterable[bytes]) -> None:
        self.flags = flags
        self.envelope = envelope
        self.message = message
        self.done: Deferred[CleanupResult] = Deferred()
        self._buffer = b""
        self._groups: list[dict[str, str]] = []
        self._queue_id = ""
        self._paused: Deferred[None] | None = None
        self._lost = False

    # -- reading attribute groups ---------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        """Collect attribute groups; the first starts the submission, the second is the answer."""
        self._buffer += data
        while True:
            group = self._take_group()
            if group is None:
                break
            if "queue_id" not in group and not self._queue_id and "status" not in group:
                continue  # Postfix 3 announces its protocol in a group of its own in some versions
            self._groups.append(group)
            if not self._queue_id:
                self._queue_id = group.get("queue_id", "")
                Deferred.fromCoroutine(self._send()).addErrback(self._fail)
            else:
                self._answer(group)
        if len(self._buffer) > MAX_ATTRIBUTES:
            self._fail(Failure(CleanupError("cleanup sent more attributes than expected")))

    def _take_group(self) -> dict[str, str] | None:
        """The next complete ``name\\0value\\0 ... \\0`` group, or ``None`` while it is incomplete."""
        fields = self._buffer.split(b"\0")
        group: dict[str, str] = {}
        used = 0
        index = 0
        while index < len(fields) - 1:  # the last field is the unterminated rest
            name = fields[index]
            used += len(name) + 1
            if not name:
                self._buffer = self._buffer[used:]
                return group
            if index + 1 >= len(fields) - 1:
                return None
            value = fields[index + 1]
            used += len(value) + 1
            group[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
            index += 2
        return None

    def _answer(self, group: dict[str, str]) -> None:
        if self.done.called:
            return
        try:
            status = int(group.get("status", ""))
        except ValueError:
            self._fail(Failure(CleanupError(f"cleanup answered without a status: {group!r}")))
            return
        self.done.callback(CleanupResult(self._queue_id, status, group.get("reason", "").strip()))
        assert self.transport is not None
        self.transport.loseConnection()

    # -- writing ------------------------------------------------------------------
    async def _send(self) -> None:
        transport: Any = self.transport
        transport.write(attributes([("flags", str(self.flags))]))
        transport.write(self.envelope.records())
        transport.registerProducer(self, True)
        try:
            for piece in message_records(self.message):
                if self._lost:
                    return
                transport.write(piece)
                if self._paused is not None:
                    await self._paused
        finally:
            if not self._lost:
                transport.unregisterProducer()
        transport.write(record(REC_XTRA) + record(REC_END))

    def pauseProducing(self) -> None:
        """The socket's buffer is full: wait before writing more."""
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        """The socket drained."""
        self._release()

    def stopProducing(self) -> None:
        """The connection is going away."""
        self._lost = True
        self._release()

    def _release(self) -> None:
        if self._paused is not None:
            paused, self._paused = self._paused, None
            paused.callback(None)

    # -- ending ---------------------------------------------------------------------
    def _fail(self, failure: Failure) -> None:
        if not self.done.called:
            self.done.errback(failure)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = Failure(CleanupError("connection lost"))) -> None:  # noqa: B008
        """A connection that ends before the answer is a failure."""
        self._lost = True
        self._release()
        if not self.done.called:
            stage = "before the queue id" if not self._queue_id else "before the answer"
            self.done.errback(Failure(CleanupError(f"cleanup closed the connection {stage}: "
                                                   f"{reason.getErrorMessage()}")))


async def submit(endpoint: IStreamClientEndpoint, clock: IReactorTime, flags: int, envelope: Envelope,
                 message: Iterable[bytes], timeout: float) -> CleanupResult:
    """Hand one message to ``cleanup`` behind ``endpoint`` and return its answer.

    ``timeout`` (seconds on ``clock``) bounds the whole conversation,
    connecting included. Raises :class:`CleanupUnreachable` when no
    connection was made, :class:`CleanupError` when the conversation broke
    off (timeout, lost connection, protocol error) before ``cleanup`` answered.
    """
    protocol = CleanupProtocol(flags, envelope, message)
    connecting = endpoint.connect(Factory.forProtocol(lambda: protocol))
    timer = clock.callLater(timeout, _give_up, connecting, protocol, timeout)
    try:
        try:
            await connecting
        except CancelledError as err:
            raise CleanupUnreachable(f"no connection within {timeout:g}s") from err
        except Exception as err:
            raise CleanupUnreachable(str(err) or type(err).__name__) from err
        return await protocol.done
    finally:
        if timer.active():
            timer.cancel()


def _give_up(connecting: Deferred[Any], protocol: CleanupProtocol, timeout: float) -> None:
    if not connecting.called:
        connecting.cancel()
    elif not protocol.done.called:
        protocol._fail(Failure(CleanupError(f"cleanup did not answer within {timeout:g}s")))


__all__ = ["CHUNK", "FLAGS", "HARD", "SOFT", "CleanupError", "CleanupProtocol", "CleanupResult",
           "CleanupUnreachable", "Envelope",
           "attributes", "message_records", "parse_flags", "record", "submit"]
