"""queue/exim-bsmtp: the batched SMTP it writes (stand-in program) and a real Exim where installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.queue_support import StandInCase, private_exim

MESSAGE = b"From: a@example.org\nSubject: bsmtp\nMessage-Id: <e-1@example.org>\n\nbody\n.dot line\n..two\nend"

STAND_IN = """
open(out + "/argv", "w").write(" ".join(sys.argv[1:]))
open(out + "/batch", "wb").write(sys.stdin.buffer.read())
code, _, reply = behaviour.partition(" ")
if reply:
    print(reply)
sys.exit(int(code))
"""


def queue(line: str, sender: str = "<a@example.org>", clock: Any = None) -> defer.Deferred[Any]:
    engine = make_engine([line], clock=clock if clock is not None else reactor)
    txn = make_transaction(engine, sender=sender, recipients=["<bob@example.test>", "<carol@example.test>"],
                           message=MESSAGE)
    return run_hook(engine, "queue", txn)


class StandInTests(StandInCase):
    """The batch and the exit-code mapping, with a program written by the test."""

    program_name = "exim"
    script = STAND_IN

    def run_with(self, behaviour: str, **kwargs: Any) -> defer.Deferred[Any]:
        self.behave(behaviour)
        return queue(f"queue/exim-bsmtp {self.program} timeout=20", **kwargs)

    @defer.inlineCallbacks
    def test_batch_is_dot_stuffed_smtp(self) -> Any:
        result = yield self.run_with("0")
        self.assertEqual((result.code, result.message), (OK, "Queued! <e-1@example.org>"))
        self.assertEqual((self.dir / "argv").read_text(), "-bS")
        self.assertEqual((self.dir / "batch").read_bytes(),
                         b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\n"
                         b"RCPT TO:<carol@example.test>\r\nDATA\r\n"
                         + MESSAGE.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
                         + b"\r\n.\r\nQUIT\r\n")

    @defer.inlineCallbacks
    def test_null_sender(self) -> Any:
        yield self.run_with("0", sender="<>")
        self.assertTrue((self.dir / "batch").read_bytes().startswith(b"MAIL FROM:<>\r\n"))

    @defer.inlineCallbacks
    def test_5xx_reply_is_552_anything_else_452(self) -> Any:
        for behaviour, code in (("2 554 Unexpected end of file", DENY), ("1", DENYSOFT), ("2", DENYSOFT),
                                ("2 451 Temporary local problem", DENYSOFT)):
            result = yield self.run_with(behaviour)
            self.assertEqual(result.code, code, behaviour)

    @defer.inlineCallbacks
    def test_hanging_exim_is_killed_on_the_engine_clock(self) -> Any:
        clock = Clock()
        answer = self.run_with("hang", clock=clock)
        self.assertNoResult(answer)
        clock.advance(21)
        result = yield answer
        self.assertEqual(result.code, DENYSOFT)


class RealEximTests(unittest.TestCase):
    """A private Exim configuration that only queues (``-odq``); the spool is counted with ``-bpc``."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).resolve()
        self.wrapper = private_exim(self.root)
        self.addCleanup(shutil.rmtree, self.root, True)

    def spool(self) -> str:
        listing = subprocess.run([str(self.wrapper), "-bp"], capture_output=True, text=True, timeout=30)
        return listing.stdout + listing.stderr

    @defer.inlineCallbacks
    def test_message_is_in_exims_spool(self) -> Any:
        (self.root / "queue-only").write_text(f"#!/bin/sh\nexec {self.wrapper} -odq \"$@\"\n")
        (self.root / "queue-only").chmod(0o755)
        result = yield queue(f"queue/exim-bsmtp {self.root / 'queue-only'}")
        self.assertEqual((result.code, result.message), (OK, "Queued! <e-1@example.org>"))
        listing = self.spool()
        self.assertIn("<a@example.org>", listing)
        self.assertIn("bob@example.test", listing)
        self.assertIn("carol@example.test", listing)
        [data] = (self.root / "spool" / "input").rglob("*-D")
        # Exim undid the dot-stuffing: the body is the message's own
        body = data.read_bytes().replace(b"\r\n", b"\n")
        self.assertTrue(body.endswith(b"\nbody\n.dot line\n..two\nend\n"), body)
