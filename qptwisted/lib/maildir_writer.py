"""A process that writes small Maildir deliveries and makes them durable, one ``syncfs`` per batch.

Creating, writing and renaming a file are system calls the reactor would
otherwise make itself, and a sync running on a thread beside it slows it
down further; a thread cannot take the file work over cheaply either, since
each of its system calls hands the GIL back and forth with the reactor.
(Measured on the realistic chain: the reactor thread's CPU per message fell
from about 345 µs to about 210 with the writer.) So each engine that
delivers into Maildirs starts one writer process
(``python -m qptwisted.lib.maildir``) on first use and stops it when the
engine closes. This module is the
engine's side; the writer's own loop is :func:`qptwisted.lib.maildir.serve_writer`.

The engine sends each delivery down the writer's stdin: the message, the
head of each copy (``Return-Path``, ``Delivered-To``, ...) and the file
mode. The writer reads all that has arrived, writes every copy to ``tmp/``
and renames it into ``new/`` (:func:`qptwisted.lib.maildir.write_copies`),
does the same for what arrived meanwhile, syncs each filesystem once for
the batch, and answers each delivery with
its paths or its error. The engine answers ``250`` only then, so the rule
stays "250 only once message and directory entry are durable". A failed
sync fails the whole batch and unlinks its files.

If the writer cannot start (it exits before saying it is ready), the
deliveries waiting for it, and all later ones, are written in the server
process instead, as without a writer. If it dies later, the deliveries it
had not answered fail (the client gets ``452``) and the next delivery starts a new one.
"""

from __future__ import annotations

import itertools
import marshal
import os
import struct
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from qptwisted.core.codes import LOGERROR

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine

_SIZE = struct.Struct("!I")
#: the first frame a writer sends: it has imported everything and reads deliveries
READY = "ready"
#: the copies of one delivery: ``(directory, [the lines above the message])`` per Maildir
Copies = list[tuple[str, list[bytes]]]
#: writes one delivery in the server process: ``(engine, copies, message, mode)``
Fallback = Callable[["Engine", Copies, bytes, int], Deferred[list[str]]]
#: what the writer is told: (id, file mode, copies, message)
Request = tuple[int, int, Copies, bytes]
#: what it answers: (id, paths in new/ or None, error text or None)
Answer = tuple[int, "list[str] | None", "str | None"]


def frame(item: Any) -> bytes:
    """``item`` (bytes, str, int, lists and tuples of them) as one length-prefixed frame."""
    payload = marshal.dumps(item)
    return _SIZE.pack(len(payload)) + payload


def unframe(buffer: bytes) -> tuple[list[Any], bytes]:
    """The whole frames at the start of ``buffer``, and what is left after them."""
    items, start = [], 0
    while len(buffer) - start >= 4:
        (size,) = _SIZE.unpack_from(buffer, start)
        if len(buffer) - start - 4 < size:
            break
        items.append(marshal.loads(buffer[start + 4:start + 4 + size]))
        start += 4 + size
    return items, buffer[start:]


class WriterExited(OSError):
    """The writer process ended before it answered a delivery."""


class MaildirWriter(ProcessProtocol):
    """The engine's side of one writer process: send deliveries, fire each one's Deferred with its answer."""

    #: how the writer process is started
    command = (sys.executable, "-m", "qptwisted.lib.maildir")

    def __init__(self, engine: Engine, fallback: Fallback) -> None:
        self.engine = engine
        self.fallback = fallback  # writes one delivery in this process (the writer could not start)
        self.unavailable = False
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[Request, Deferred[list[str]]]] = {}
        self._buffer = b""
        self._started = False
        self._ready = False
        self._stdin: Any = None  # the writer's stdin, written directly while nothing is queued before it
        self._ended: Deferred[None] | None = None
        self._closing = False

    def deliver(self, copies: Copies, message: bytes, mode: int) -> Deferred[list[str]]:
        """Write ``message`` once per ``(directory, head)``; fires with the paths once they are durable."""
        request: Request = (next(self._ids), mode, copies, message)
        if self.unavailable or self._closing:
            return self._in_process(request)
        if not self._started:
            self._start()
            if self.unavailable:
                return self._in_process(request)
        waiting: Deferred[list[str]] = Deferred()
        self._waiting[request[0]] = (request, waiting)
        self._send(frame(request))
        return waiting

    def _start(self) -> None:
        reactor: Any = self.engine.clock
        try:
            reactor.spawnProcess(self, self.command[0], list(self.command), env=os.environ,
                                 childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as err:
            self._give_up(f"cannot start: {err}")
            return
        self._started, self._ready = True, False
        self._stdin = self.transport.pipes[0]  # type: ignore[union-attr]
        self._ended = Deferred()

    def _send(self, data: bytes) -> None:
        # straight into the pipe when nothing waits before it: Twisted's buffered path costs two
        # epoll changes and a reactor turn per delivery
        stdin = self._stdin
        if not stdin.dataBuffer and not stdin._tempDataBuffer:
            try:
                written = os.write(stdin.fd, data)
            except BlockingIOError:
                written = 0
            except OSError:  # the writer is gone: processEnded fails this delivery
                return
            data = data[written:]
            if not data:
                return
        self.transport.write(data)  # type: ignore[union-attr]

    def _in_process(self, request: Request) -> Deferred[list[str]]:
        _number, mode, copies, message = request
        return self.fallback(self.engine, copies, message, mode)

    def _give_up(self, why: str) -> None:
        self.engine.log(LOGERROR, f"maildir writer {why}; writing deliveries in the server process")
        self.unavailable = True

    # -- ProcessProtocol -----------------------------------------------------------
    def outReceived(self, data: bytes) -> None:
        """Answers from the writer: fire each delivery's Deferred."""
        answers, self._buffer = unframe(self._buffer + data if self._buffer else data)
        for answer in answers:
            if answer == READY:
                self._ready = True
                continue
            number, paths, error = answer
            _request, waiting = self._waiting.pop(number)
            if error is None:
                waiting.callback(paths)
            else:
                waiting.errback(OSError(error))

    def errReceived(self, data: bytes) -> None:
        """What the writer says on stderr (a traceback if it crashed) goes to the log."""
        self.engine.log(LOGERROR, f"maildir writer: {data.decode('utf-8', 'replace').rstrip()}")

    def processEnded(self, reason: Failure) -> None:
        """The writer is gone: redo what it never took, fail what it took and did not answer."""
        waiting, self._waiting = self._waiting, {}
        self._started, self._buffer, self._stdin = False, b"", None
        ended, self._ended = self._ended, None
        if not self._ready and not self._closing:
            self._give_up(f"exited before it was ready ({reason.getErrorMessage()})")
            for request, deferred in waiting.values():
                self._in_process(request).chainDeferred(deferred)
        else:
            if not reason.check(ProcessDone) or waiting:
                self.engine.log(LOGERROR, f"maildir writer ended: {reason.getErrorMessage()}")
            for _request, deferred in waiting.values():
                deferred.errback(WriterExited(f"the maildir writer ended: {reason.getErrorMessage()}"))
        if ended is not None:
            ended.callback(None)

    @property
    def pid(self) -> int | None:
        """The writer's process id while it runs."""
        return self.transport.pid if self._started and self.transport is not None else None  # type: ignore[attr-defined]

    def close(self) -> Deferred[None] | None:
        """Let the writer finish what it has and exit (its stdin closes); fires once it has."""
        self._closing = True
        if not self._started or self._ended is None:
            return None
        ended = self._ended
        self.transport.closeStdin()  # type: ignore[union-attr]
        return ended


_writers: weakref.WeakKeyDictionary[Engine, MaildirWriter] = weakref.WeakKeyDictionary()
_in_process: weakref.WeakSet[Engine] = weakref.WeakSet()


def write_in_process(engine: Engine) -> None:
    """Let ``engine`` write its Maildir deliveries itself: no writer process to start (one session, inetd)."""
    _in_process.add(engine)


def writer_for(engine: Engine, fallback: Fallback) -> MaildirWriter | None:
    """The writer of ``engine`` (started on first delivery, stopped with the engine).

    None where there is none to have: a test's fake clock (no processes), an engine told to
    :func:`write_in_process`, or a writer that could not start.
    """
    writer = _writers.get(engine)
    if writer is None:
        if not IReactorProcess.providedBy(engine.clock) or engine.closed or engine in _in_process:
            return None
        writer = _writers[engine] = MaildirWriter(engine, fallback)
        engine.on_close(writer.close)
    return None if writer.unavailable else writer
