"""loop: too many Received/Delivered-To headers."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted import ConfigError
from tests.plugins.policy_support import MESSAGE, dialogue


class LoopTests(unittest.TestCase):
    def deliver(self, line: str, hops: int) -> tuple:
        headers = "".join(f"Received: from hop{n}.test\n" if n % 2 else f"Delivered-To: a{n}@test\n"
                          for n in range(hops))
        return dialogue([line]).deliver("<a@example.org>", ["<bob@example.com>"], headers + MESSAGE)[-1]

    def test_table(self) -> None:
        # our own Received header counts, as in qpsmtpd
        self.assertEqual(self.deliver("loop 5", 3)[0], 250)
        self.assertEqual(self.deliver("loop 5", 4),
                         (552, "5.4.6", "Too many hops.  This message is looping. (#5.4.6)"))
        self.assertEqual(self.deliver("loop", 98)[0], 250)
        self.assertEqual(self.deliver("loop", 99)[0], 552)

    def test_bad_arguments(self) -> None:
        self.assertRaises((ConfigError, ValueError), dialogue, ["loop 1 2"])
        self.assertRaises((ConfigError, ValueError), dialogue, ["loop many"])
