"""queue/qmail-queue: hand accepted mail to qmail-queue (or a program with its interface).

Arguments: ``[PATH] [timeout=S]``. ``PATH`` defaults to the ``QMAILQUEUE``
environment variable, then ``/var/qmail/bin/qmail-queue``; ``timeout``
(default 600 s, on the engine clock) kills a program that does not finish.

The program is started with :meth:`reactor.spawnProcess` (the reactor never
waits on it). The message goes to its file descriptor 0, the envelope to
file descriptor 1 as ``F<sender>\\0T<rcpt>\\0T<rcpt>\\0\\0``, as
qmail-queue(8) defines. The exit code is the answer: 0 is
``250 Queued!``; 11-40 are permanent (552: 11 address too long, 31 refused);
everything else (51 out of memory, 52 timeout, 53 write error, 54 unable to
read the message or envelope, 55 config, 56 network, 61-66 queue
problems, 71-74 downstream trouble, 81 internal bug, 91 envelope format
error, killed by a signal) is temporary (452). The program's stderr is
logged.

config/plugins::

    queue/qmail-queue
    queue/qmail-queue /var/qmail/bin/qmail-queue timeout=300
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import error, protocol
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from qptwisted import DENY, DENYSOFT, LOGERROR, LOGINFO, OK, Plugin, Transaction

#: qmail-queue(8) exit codes and what they mean
EXIT_CODES = {
    11: "address too long", 31: "mail server permanently refuses to send the message",
    51: "out of memory", 52: "timeout", 53: "write error (disk full?)",
    54: "unable to read the message or envelope", 55: "unable to read a configuration file",
    56: "problem making a network connection", 61: "problem with the qmail home directory",
    62: "problem with the queue directory", 63: "problem with queue/pid", 64: "problem with queue/mess",
    65: "problem with queue/intd", 66: "problem with queue/todo",
    71: "mail server temporarily refuses", 72: "connection to mail server timed out",
    73: "connection to mail server rejected", 74: "communication with mail server failed",
    81: "internal bug", 91: "envelope format error",
}


def envelope_bytes(transaction: Transaction) -> bytes:
    """``F<sender>\\0T<rcpt>\\0...\\0`` (qmail-queue's fd 1 format)."""
    assert transaction.sender is not None
    parts = [b"F" + transaction.sender.address.encode("utf-8") + b"\0"]
    parts += [b"T" + rcpt.address.encode("utf-8") + b"\0" for rcpt in transaction.recipients]
    return b"".join(parts) + b"\0"


class _QueueProcess(protocol.ProcessProtocol):
    """Feeds fd 0 and fd 1, collects stderr, reports the exit status."""

    def __init__(self, chunks: Any, envelope: bytes) -> None:
        self.chunks = chunks
        self.envelope = envelope
        self.stderr = b""
        self.done: Deferred[int | None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        try:
            for chunk in self.chunks:
                self.transport.writeToChild(0, chunk)  # type: ignore[attr-defined]
            self.transport.closeChildFD(0)  # type: ignore[attr-defined]
            self.transport.writeToChild(1, self.envelope)  # type: ignore[attr-defined]
            self.transport.closeChildFD(1)  # type: ignore[attr-defined]
        except Exception:
            self.transport.signalProcess("KILL")

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == 2 and len(self.stderr) < 4096:
            self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        if reason.check(error.ProcessDone):
            self.done.callback(0)
        elif reason.check(error.ProcessTerminated) and getattr(reason.value, "exitCode", None) is not None:
            self.done.callback(reason.value.exitCode)  # type: ignore[union-attr]
        else:
            self.done.callback(None)  # killed by a signal


class QmailQueue(Plugin):
    """Queue through a qmail-queue compatible program."""

    name = "queue/qmail-queue"
    timeout = 900.0
    #: the reactor used to spawn (tests may replace it); timers use the engine clock
    reactor: Any = None

    def register(self, *args: str) -> None:
        """``[PATH] [timeout=S]``."""
        paths = [arg for arg in args if "=" not in arg]
        options = dict(arg.split("=", 1) for arg in args if "=" in arg)
        self.path = paths[0] if paths else os.environ.get("QMAILQUEUE", "/var/qmail/bin/qmail-queue")
        self.process_timeout = float(options.pop("timeout", 600))
        if options:
            raise ValueError(f"unknown option(s) {', '.join(options)}")

    def hook_queue(self, transaction: Transaction) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.deliver(transaction))

    async def deliver(self, transaction: Transaction) -> tuple[Any, str]:
        """Run the program and map its exit code."""
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        process = _QueueProcess(transaction.iter_message(), envelope_bytes(transaction))
        try:
            transport = reactor.spawnProcess(process, self.path, [self.path], env=dict(os.environ),
                                             childFDs={0: "w", 1: "w", 2: "r"})
        except OSError as err:
            self.log(LOGERROR, f"cannot start {self.path}: {err}")
            return DENYSOFT, "Queue program unavailable, try again later (#4.3.0)"
        timer = self.clock.callLater(self.process_timeout, _kill, transport)
        try:
            code = await process.done
        except CancelledError:
            _kill(transport)
            raise
        finally:
            if timer.active():
                timer.cancel()
        stderr = process.stderr.decode("utf-8", "replace").strip()
        if code == 0:
            self.log(LOGINFO, f"{self.path} queued the message" + (f": {stderr}" if stderr else ""))
            return OK, f"Queued! {transaction.message_id or ''}".rstrip()
        reason = "killed" if code is None else EXIT_CODES.get(code, "unknown error")
        self.log(LOGERROR, f"{self.path} exited with {code} ({reason})" + (f": {stderr}" if stderr else ""))
        if code is not None and 11 <= code <= 40:
            return DENY, f"Message refused by the queue: {reason} (#5.3.0)"
        return DENYSOFT, f"Queue error: {reason}, try again later (#4.3.0)"


def _kill(transport: Any) -> None:
    try:
        transport.signalProcess("KILL")
    except error.ProcessExitedAlready:
        pass
