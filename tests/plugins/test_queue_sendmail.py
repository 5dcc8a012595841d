"""queue/sendmail against a real Postfix (sendmail -> postdrop -> pickup) and a stand-in program."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK, ConfigError
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.queue_support import StandInCase, header_of, shared_postfix, wait_for

MESSAGE = b"From: a@example.org\nSubject: sendmail\nMessage-Id: <s-1@example.org>\n\nbody\n.dot line\n"

STAND_IN = """
message = sys.stdin.buffer.read()
json.dump({"argv": sys.argv[1:], "message": message.decode()}, open(out + "/call.json", "w"))
print("stand-in output", file=sys.stderr)
sys.exit(int(behaviour))
"""


def queue(line: str, sender: str = "<a@example.org>",
          recipients: tuple[str, ...] = ("<bob@example.test>",), clock: Any = None) -> defer.Deferred[Any]:
    engine = make_engine([line], clock=clock if clock is not None else reactor)
    txn = make_transaction(engine, sender=sender, recipients=list(recipients), message=MESSAGE)
    return run_hook(engine, "queue", txn)


class RealPostfixTests(unittest.TestCase):
    """The message goes through Postfix's own sendmail and postdrop into its queue."""

    def setUp(self) -> None:
        self.postfix = shared_postfix()
        self.line = f"queue/sendmail /usr/sbin/sendmail config={self.postfix.config} timeout=60"

    @defer.inlineCallbacks
    def test_queued_then_delivered_to_every_recipient(self) -> Any:
        result = yield queue(self.line, recipients=("<bob@example.test>", "<carol@example.test>"))
        self.assertEqual((result.code, result.message), (OK, "Queued! <s-1@example.org>"))
        for user in ("bob", "carol"):
            [message] = wait_for(lambda user=user: self.postfix.delivered(user),  # type: ignore[misc]
                                 f"{user}'s maildir")
            self.assertEqual(header_of(message, "Return-Path"), ["<a@example.org>"])
            self.assertEqual(header_of(message, "Message-Id"), ["<s-1@example.org>"])
            self.assertTrue(message.endswith(b"\n\nbody\n.dot line\n"), message)

    @defer.inlineCallbacks
    def test_null_sender(self) -> Any:
        result = yield queue(self.line, sender="<>")
        self.assertEqual(result.code, OK)
        [message] = wait_for(lambda: self.postfix.delivered("bob"), "bob's maildir")  # type: ignore[misc]
        self.assertEqual(header_of(message, "Return-Path"), ["<>"])


class StandInTests(StandInCase):
    """Arguments, exit codes and the timeout, with a program written by the test."""

    program_name = "sendmail"
    script = STAND_IN

    def run_with(self, behaviour: str, options: str = "", **kwargs: Any) -> defer.Deferred[Any]:
        self.behave(behaviour)
        return queue(f"queue/sendmail {self.program} {options}", **kwargs)

    def call(self) -> dict[str, Any]:
        return json.loads((self.dir / "call.json").read_text())  # type: ignore[no-any-return]

    @defer.inlineCallbacks
    def test_arguments_and_message(self) -> Any:
        result = yield self.run_with("0", "config=/etc/postfix-out",
                                     recipients=("<bob@example.test>", "<-oQ/tmp@example.test>"))
        self.assertEqual(result.code, OK)
        self.assertEqual(self.call()["argv"], ["-C", "/etc/postfix-out", "-i", "-f", "a@example.org", "--",
                                               "bob@example.test", "-oQ/tmp@example.test"])
        self.assertTrue(self.call()["message"].endswith("\n\nbody\n.dot line\n"))

    @defer.inlineCallbacks
    def test_null_sender_is_angle_brackets(self) -> Any:
        yield self.run_with("0", sender="<>")
        self.assertEqual(self.call()["argv"][:3], ["-i", "-f", "<>"])

    @defer.inlineCallbacks
    def test_permanent_exit_codes_are_552(self) -> Any:
        for code in ("65", "67", "68"):
            result = yield self.run_with(code)
            self.assertEqual(result.code, DENY, code)
        self.assertEqual(result.message, "Message refused by the local MTA: no such host (#5.3.0)")

    @defer.inlineCallbacks
    def test_temporary_exit_codes_are_452(self) -> Any:
        for code in ("1", "71", "75", "78"):
            result = yield self.run_with(code)
            self.assertEqual(result.code, DENYSOFT, code)
        self.assertEqual(result.message, "Queue error: configuration error, try again later (#4.3.0)")

    @defer.inlineCallbacks
    def test_missing_program_is_452(self) -> Any:
        result = yield queue(f"queue/sendmail {self.dir / 'nowhere'}")
        self.assertEqual(result.code, DENYSOFT)

    @defer.inlineCallbacks
    def test_hanging_program_is_killed_on_the_engine_clock(self) -> Any:
        clock = Clock()
        answer = self.run_with("hang", "timeout=20", clock=clock)
        self.assertNoResult(answer)
        clock.advance(21)
        result = yield answer
        self.assertEqual(result.code, DENYSOFT)

    def test_unknown_option_is_a_configuration_error(self) -> None:
        self.assertRaises(ConfigError, make_engine, [f"queue/sendmail {self.program} colour=blue"])
