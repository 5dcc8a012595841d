"""queue/qmail-queue against a stand-in qmail-queue program written by the test."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock

from qptwisted import DENY, DENYSOFT, OK
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.queue_support import StandInCase

STAND_IN = """
message = os.read(0, 1 << 20)
while True:
    more = os.read(0, 1 << 20)
    if not more:
        break
    message += more
envelope = b""
while True:
    more = os.read(1, 65536)
    if not more:
        break
    envelope += more
code = int(behaviour)
if code == 0:
    with open(out + "/message", "wb") as handle:
        handle.write(message)
    with open(out + "/envelope", "wb") as handle:
        handle.write(envelope)
else:
    sys.stderr.write("stand-in failing with %d\\n" % code)
sys.exit(code)
"""

MESSAGE = b"From: a@example.org\nSubject: qmail\nMessage-Id: <q-1@example.org>\n\nbody\n.dot line\n"


class QmailQueueTests(StandInCase):
    program_name = "qmail-queue"
    script = STAND_IN

    def queue(self, behaviour: str, clock: Any = None) -> defer.Deferred[Any]:
        self.behave(behaviour)
        engine = make_engine([f"queue/qmail-queue {self.program} timeout=20"],
                             clock=clock if clock is not None else reactor)
        txn = make_transaction(engine, sender="<a@example.org>",
                               recipients=["<b@example.net>", "<c@example.net>"], message=MESSAGE)
        return run_hook(engine, "queue", txn)

    @defer.inlineCallbacks
    def test_message_on_fd0_envelope_on_fd1(self) -> Any:
        result = yield self.queue("0")
        self.assertEqual(result.code, OK)
        self.assertEqual(result.message, "Queued! <q-1@example.org>")
        self.assertEqual((self.dir / "envelope").read_bytes(),
                         b"Fa@example.org\0Tb@example.net\0Tc@example.net\0\0")
        self.assertTrue((self.dir / "message").read_bytes().endswith(b"\n\nbody\n.dot line\n"))

    @defer.inlineCallbacks
    def test_permanent_exit_codes_are_552(self) -> Any:
        for code in ("11", "31"):
            result = yield self.queue(code)
            self.assertEqual(result.code, DENY, code)
        self.assertFalse((self.dir / "message").exists())

    @defer.inlineCallbacks
    def test_temporary_exit_codes_are_452(self) -> Any:
        for code in ("53", "71", "81", "91"):
            result = yield self.queue(code)
            self.assertEqual(result.code, DENYSOFT, code)

    @defer.inlineCallbacks
    def test_missing_program_is_452(self) -> Any:
        self.program.unlink()
        (self.dir / "behaviour").write_text("0")
        result = yield self.queue("0")
        self.assertEqual(result.code, DENYSOFT)

    @defer.inlineCallbacks
    def test_hanging_program_is_killed_on_the_engine_clock(self) -> Any:
        clock = Clock()
        answer = self.queue("hang", clock)
        self.assertNoResult(answer)
        clock.advance(21)
        result = yield answer
        self.assertEqual(result.code, DENYSOFT)
