"""What an idle session holds: one shared deadline timer, no empty containers made in advance."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from qptwisted.mail.connection import Connection
from qptwisted.mail.transaction import Transaction
from qptwisted.smtp.deadlines import Deadlines
from qptwisted.smtp.extensions import NO_PARAMETERS
from qptwisted.testing import SMTPDialogue, make_connection, make_engine


class Target:
    def __init__(self, log: list[str], name: str, deadlines: Deadlines | None = None) -> None:
        self.log, self.name, self.deadlines = log, name, deadlines

    def deadline_passed(self) -> None:
        self.log.append(self.name)
        if self.name == "boom":
            raise RuntimeError("a broken connection")
        if self.name == "again" and self.deadlines is not None:
            self.deadlines.add(self.deadlines.clock.seconds() + 5, Target(self.log, "later"))


class DeadlinesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.deadlines = Deadlines(self.clock)
        self.log: list[str] = []

    def add(self, when: float, name: str) -> list[object]:
        return self.deadlines.add(when, Target(self.log, name, self.deadlines))

    def test_one_reactor_call_for_many_deadlines_fired_in_order(self) -> None:
        for when, name in ((30, "c"), (10, "a"), (20, "b"), (20, "b2")):
            self.add(when, name)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(9.5)
        self.assertEqual(self.log, [])
        self.clock.advance(0.5)
        self.assertEqual(self.log, ["a"])
        self.clock.advance(10)
        self.assertEqual(self.log, ["a", "b", "b2"])
        self.clock.advance(10)
        self.assertEqual(self.log, ["a", "b", "b2", "c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.deadlines.timer)

    def test_earlier_deadline_moves_the_timer_forward(self) -> None:
        self.add(100, "late")
        self.add(5, "early")
        self.assertEqual(self.deadlines.timer.getTime(), 5)  # type: ignore[union-attr]
        self.clock.advance(5)
        self.assertEqual(self.log, ["early"])
        self.assertEqual(self.deadlines.timer.getTime(), 100)  # type: ignore[union-attr]

    def test_cancelled_entry_does_not_fire_and_the_last_cancel_leaves_no_call(self) -> None:
        first, second = self.add(10, "a"), self.add(20, "b")
        self.deadlines.cancel(first)
        self.deadlines.cancel(first)  # twice is harmless
        self.assertEqual(len(self.deadlines), 1)
        self.clock.advance(10)
        self.assertEqual(self.log, [])
        self.deadlines.cancel(second)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # a closed server leaves the reactor clean
        self.clock.advance(100)
        self.assertEqual(self.log, [])

    def test_cancelled_entries_are_dropped_when_they_are_half_the_heap(self) -> None:
        entries = [self.add(1000 + n, f"n{n}") for n in range(200)]
        for entry in entries[:150]:
            self.deadlines.cancel(entry)
        self.assertEqual(len(self.deadlines), 50)
        self.assertLess(len(self.deadlines._heap), 200)
        self.clock.advance(2000)
        self.assertEqual(self.log, [f"n{n}" for n in range(150, 200)])

    def test_a_failing_target_does_not_stop_the_others(self) -> None:
        self.add(1, "boom")
        self.add(1, "ok")
        self.clock.advance(1)
        self.assertEqual(self.log, ["boom", "ok"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_target_may_add_a_deadline_while_deadlines_fire(self) -> None:
        self.add(1, "again")
        self.clock.advance(1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(5)
        self.assertEqual(self.log, ["again", "later"])


class IdleSessionTests(unittest.TestCase):
    """An idle connection after EHLO holds only what it needs (bench/: memory per idle session)."""

    def test_sessions_of_one_listener_share_one_deadline_call(self) -> None:
        engine = make_engine(["rcpt_ok"], config={"timeout": "60"})
        first = SMTPDialogue(engine, advance=False)
        first.send("EHLO a.example")
        protocol = first.factory.buildProtocol(None)  # a second connection on the same listener
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(len(engine.clock.getDelayedCalls()), 1)
        engine.clock.advance(61)
        self.assertIn(b"421 4.4.2", transport.value())
        self.assertTrue(first.closed)

    def test_no_notes_or_parameter_set_made_for_an_idle_session(self) -> None:
        smtp = SMTPDialogue(make_engine(["rcpt_ok"]))
        smtp.send("EHLO a.example")
        session = smtp.session
        self.assertIsNone(Transaction.notes.peek(session.transaction))
        self.assertIsNone(Transaction.auth_results.peek(session.transaction))
        self.assertIsNone(Connection.notes.peek(session.connection))
        self.assertIs(session.plugin_parameters, NO_PARAMETERS)


class OnDemandTests(unittest.TestCase):
    def test_notes_behave_as_a_plain_attribute(self) -> None:
        connection = make_connection(notes={"whitelisthost": "dnswl"}, auth_results=["iprev=pass"])
        self.assertEqual(connection.notes, {"whitelisthost": "dnswl"})
        self.assertEqual(connection.auth_results, ["iprev=pass"])
        transaction = Transaction(connection)
        self.assertIsNone(Transaction.notes.peek(transaction))
        transaction.notes["x"] = 1
        self.assertEqual(Transaction.notes.peek(transaction), {"x": 1})
        transaction.notes = {"y": 2}
        self.assertEqual(transaction.notes, {"y": 2})
