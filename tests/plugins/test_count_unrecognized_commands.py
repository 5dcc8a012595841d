"""count_unrecognized_commands: 500 for nonsense, then 521 and the connection closed."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted.testing import SMTPDialogue, make_engine


class CountUnrecognizedTests(unittest.TestCase):
    def dialogue(self, plugin: str = "count_unrecognized_commands") -> SMTPDialogue:
        smtp = SMTPDialogue(make_engine([plugin, "rcpt_ok", "queue/discard"]))
        self.addCleanup(smtp.close)
        return smtp

    def test_default_limit_is_four(self) -> None:
        smtp = self.dialogue()
        for verb in ("FOO", "BAR", "BAZ"):
            [(code, *_)] = smtp.send(verb)
            self.assertEqual(code, 500)
            self.assertFalse(smtp.closed)
        [(code, _, text)] = smtp.send("QUUX")
        self.assertEqual(code, 521)
        self.assertIn("4 unrecognized commands", text)
        self.assertTrue(smtp.closed)

    def test_limit_argument(self) -> None:
        smtp = self.dialogue("count_unrecognized_commands 2")
        self.assertEqual(smtp.send("FOO")[0][0], 500)
        self.assertEqual(smtp.send("BAR")[0][0], 521)
        self.assertTrue(smtp.closed)

    def test_count_survives_good_commands_and_rset(self) -> None:
        smtp = self.dialogue("count_unrecognized_commands 3")
        self.assertEqual(smtp.send("FOO")[0][0], 500)
        self.assertEqual(smtp.send("EHLO client.test")[-1][0], 250)
        self.assertEqual(smtp.send("BAR")[0][0], 500)
        self.assertEqual(smtp.send("RSET")[0][0], 250)
        self.assertEqual(smtp.send("NOOP")[0][0], 250)
        self.assertEqual(smtp.send("BAZ")[0][0], 521)
        self.assertTrue(smtp.closed)

    def test_pipelined_nonsense_stops_at_the_limit(self) -> None:
        smtp = self.dialogue("count_unrecognized_commands 2")
        replies = smtp.send("FOO", "BAR", "BAZ", "QUUX")
        self.assertEqual([code for code, *_ in replies], [500, 521])
        self.assertTrue(smtp.closed)

    def test_counted_per_connection(self) -> None:
        engine = make_engine(["count_unrecognized_commands 2", "rcpt_ok"])
        first, second = SMTPDialogue(engine), SMTPDialogue(engine)
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        self.assertEqual(first.send("FOO")[0][0], 500)
        self.assertEqual(second.send("FOO")[0][0], 500)
        self.assertFalse(first.closed or second.closed)
