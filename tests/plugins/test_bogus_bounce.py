"""bogus_bounce: null-sender mail must have one recipient and no Return-Path."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted import ConfigError
from tests.plugins.policy_support import MESSAGE, codes, dialogue


class BogusBounceTests(unittest.TestCase):
    def deliver(self, line: str, sender: str, recipients: list[str], message: str = MESSAGE) -> list[tuple]:
        smtp = dialogue([line])
        return smtp.deliver(sender, recipients, message)[-1:]

    def test_table(self) -> None:
        one, two = ["<bob@example.com>"], ["<bob@example.com>", "<carol@example.com>"]
        self.assertEqual(codes(self.deliver("bogus_bounce", "<>", one)), [250])
        self.assertEqual(self.deliver("bogus_bounce", "<>", two), [(552, "5.7.1", "Invalid bounce (rcpt)")])
        self.assertEqual(
            self.deliver("bogus_bounce deny", "<>", one, "Return-Path: <x@spam.test>\n" + MESSAGE),
            [(552, "5.7.1", "Invalid bounce (return-path)")],
        )
        self.assertEqual(codes(self.deliver("bogus_bounce", "<>", one, "Return-Path: <>\n" + MESSAGE)), [250])
        self.assertEqual(self.deliver("bogus_bounce denysoft", "<>", two)[0][0], 452)
        self.assertEqual(codes(self.deliver("bogus_bounce log", "<>", two)), [250])
        self.assertEqual(codes(self.deliver("bogus_bounce", "<a@example.org>", two)), [250])

    def test_bad_action(self) -> None:
        self.assertRaises((ConfigError, ValueError), dialogue, ["bogus_bounce explode"])
