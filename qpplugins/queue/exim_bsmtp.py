"""queue/exim-bsmtp: hand accepted mail to Exim as batched SMTP (``exim -bS``).

Arguments: ``[PATH] [timeout=S]``. ``PATH`` defaults to ``/usr/sbin/exim4``
(Debian's name), else ``/usr/sbin/exim``; ``timeout`` (default 600 s)
kills an Exim that does not finish.

Exim reads ``MAIL FROM``, one ``RCPT TO`` per recipient, ``DATA``, the
dot-stuffed message and ``QUIT`` on its standard input, started with
:meth:`reactor.spawnProcess` so the reactor never waits on it. Exim exits
0 once the message is in its spool, and only then is ``250 Queued!`` sent.
On an error Exim exits non-zero and prints an SMTP reply (for example
``554 Unexpected end of file``): a 5xx reply is permanent (552), anything
else — a 4xx, no reply, a crash, the timeout — is temporary (452). Exit
code 1 also means "accepted before a later error", which cannot be told
from a failed start, so it is 452 too: a possible duplicate rather than a
possible loss. The calling user must be one Exim trusts (root or Exim's
own user) for the envelope sender to be kept.

config/plugins::

    queue/exim-bsmtp
    queue/exim-bsmtp /usr/sbin/exim4 timeout=120
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

from qptwisted import Transaction
from qptwisted.lib.smtpclient import smtp_data

from ._program import ProgramQueue, ProgramResult

_REPLY = re.compile(r"^[245]\d\d[ -].*$", re.MULTILINE)


def bsmtp(transaction: Transaction) -> Iterator[bytes]:
    """The batched SMTP for one message."""
    assert transaction.sender is not None
    yield f"MAIL FROM:{transaction.sender}\r\n".encode()
    yield b"".join(f"RCPT TO:{rcpt}\r\n".encode() for rcpt in transaction.recipients)
    yield b"DATA\r\n"
    yield from smtp_data(transaction.iter_message())
    yield b"QUIT\r\n"


class EximBSMTP(ProgramQueue):
    """Queue through ``exim -bS``."""

    name = "queue/exim-bsmtp"
    default_path = "/usr/sbin/exim4"
    refuser = "the local MTA"

    def default_program(self) -> str:
        """Debian's ``exim4``, else ``exim``."""
        return self.default_path if os.path.exists(self.default_path) else "/usr/sbin/exim"

    def arguments(self, transaction: Transaction) -> list[str]:
        return ["-bS"]

    def inputs(self, transaction: Transaction) -> dict[int, Iterable[bytes]]:
        return {0: bsmtp(transaction)}

    def meaning(self, result: ProgramResult) -> str:
        """The SMTP reply Exim printed, if any."""
        reply = _REPLY.search(result.output)
        return reply.group(0) if reply else super().meaning(result)

    def is_permanent(self, result: ProgramResult) -> bool:
        """A 5xx reply."""
        reply = _REPLY.search(result.output)
        return reply is not None and reply.group(0).startswith("5")
