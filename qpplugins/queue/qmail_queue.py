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
error, killed by a signal) is temporary (452). What the program prints is
logged.

config/plugins::

    queue/qmail-queue
    queue/qmail-queue /var/qmail/bin/qmail-queue timeout=300
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from qptwisted import Transaction

from ._program import ProgramQueue

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


class QmailQueue(ProgramQueue):
    """Queue through a qmail-queue compatible program."""

    name = "queue/qmail-queue"
    default_path = "/var/qmail/bin/qmail-queue"
    exit_codes = EXIT_CODES
    permanent = frozenset(range(11, 41))

    def default_program(self) -> str:
        """``$QMAILQUEUE``, else qmail's own program."""
        return os.environ.get("QMAILQUEUE", self.default_path)

    def inputs(self, transaction: Transaction) -> dict[int, Iterable[bytes]]:
        return {0: transaction.iter_message(), 1: [envelope_bytes(transaction)]}
