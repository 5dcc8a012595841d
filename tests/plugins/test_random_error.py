"""random_error: fault injection with a seeded random source."""

from __future__ import annotations

import random

from twisted.trial import unittest

from qptwisted import DECLINED, DENYSOFT, DENYSOFT_DISCONNECT
from qptwisted.testing import make_engine, make_transaction
from tests.plugins.policy_support import codes, dialogue, plugin


class RandomErrorTests(unittest.TestCase):
    def test_zero_percent_never_fails(self) -> None:
        smtp = dialogue(["random_error 0"])
        self.assertEqual(
            codes(smtp.deliver("<a@example.org>", ["<bob@example.com>"], "Subject: x\n\ny\n"))[-1], 250
        )

    def test_hundred_percent_always_fails(self) -> None:
        engine = make_engine(["random_error 100"])
        random_error = plugin(engine, "random_error")
        random_error.random = random.Random(42)
        seen = {(random_error.random_fail(make_transaction(engine)) or (DECLINED,))[0] for _ in range(50)}
        self.assertEqual(seen, {DENYSOFT, DENYSOFT_DISCONNECT})

    def test_dialogue_reply(self) -> None:
        smtp = dialogue(["random_error 100"])
        self.assertIn(smtp.greeting[0][:2], ((450, "4.7.1"),))
        self.assertEqual(smtp.greeting[0][2], "random failure")

    def test_connection_note_overrides(self) -> None:
        engine = make_engine(["random_error 100"])
        txn = make_transaction(engine)
        txn.connection.notes["random_fail_%"] = 0
        self.assertEqual(plugin(engine, "random_error").random_fail(txn), DECLINED)
