"""noop_counter: consecutive NOOPs."""

from __future__ import annotations

from twisted.trial import unittest

from tests.plugins.policy_support import codes, dialogue


class NoopCounterTests(unittest.TestCase):
    def test_consecutive_noops_disconnect(self) -> None:
        smtp = dialogue(["noop_counter max 3"])
        self.assertEqual(codes(smtp.send("NOOP", "NOOP")), [250, 250])
        self.assertEqual(
            smtp.send("NOOP"), [(500, "5.5.1", "Stop wasting my time, too many consecutive NOOPs")]
        )
        self.assertTrue(smtp.closed)

    def test_other_commands_reset(self) -> None:
        smtp = dialogue(["noop_counter 2"])
        self.assertEqual(
            codes(
                smtp.send("NOOP", "EHLO c.test", "NOOP", "MAIL FROM:<a@example.org>", "NOOP", "RSET", "NOOP")
            ),
            [250, 250, 250, 250, 250, 250, 250],
        )
        self.assertFalse(smtp.closed)
        self.assertEqual(codes(smtp.send("NOOP")), [500])
