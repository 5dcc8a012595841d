"""badmailfrom: the upstream decision table (is_immune_sender, is_match, hook_mail)."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT
from qptwisted.mail.address import Address
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from tests.plugins.policy_support import codes, dialogue, plugin

LIST = ["matt@test.com", "@test.net Go away, test.net", r"^spam.*@example\.org$", "noatsign"]


class IsImmuneSenderTests(unittest.TestCase):
    def test_cases(self) -> None:
        bmf = plugin(make_engine(["badmailfrom"], {"badmailfrom": LIST}), "badmailfrom")
        self.assertTrue(bmf.is_immune_sender(Address.parse("<>")))
        self.assertTrue(bmf.is_immune_sender(None))
        self.assertTrue(bmf.is_immune_sender(Address("user", "")))
        self.assertTrue(bmf.is_immune_sender(Address("", "host.test")))
        self.assertFalse(bmf.is_immune_sender(Address.parse("<a@b.test>")))
        empty = plugin(make_engine(["badmailfrom"]), "badmailfrom")
        self.assertTrue(empty.is_immune_sender(Address.parse("<a@b.test>")))


class IsMatchTests(unittest.TestCase):
    def test_exact_host_and_regex(self) -> None:
        bmf = plugin(make_engine(["badmailfrom"], {"badmailfrom": LIST}), "badmailfrom")
        default = "Your envelope sender is in my badmailfrom list"
        self.assertEqual(bmf.is_match("matt@test.com", "test.com"), default)
        self.assertIsNone(bmf.is_match("matt2@test.com", "test.com"))
        self.assertEqual(bmf.is_match("any@test.net", "test.net"), "Go away, test.net")
        self.assertEqual(bmf.is_match("spammy@example.org", "example.org"), default)
        self.assertIsNone(bmf.is_match("ham@example.org", "example.org"))


class HookMailTests(unittest.TestCase):
    def run_mail(self, sender: str, *args: str, relay: bool = False) -> tuple[object, object]:
        engine = make_engine([" ".join(["badmailfrom", *args])], {"badmailfrom": LIST})
        txn = make_transaction(engine, make_connection(relay_client=relay))
        result = self.successResultOf(run_hook(engine, "mail", txn, Address.parse(sender)))
        return result.code, result.message

    def test_table(self) -> None:
        default = "Your envelope sender is in my badmailfrom list"
        self.assertEqual(self.run_mail("<Matt@TEST.com>"), (DENY, default))
        self.assertEqual(self.run_mail("<x@test.net>"), (DENY, "Go away, test.net"))
        self.assertEqual(self.run_mail("<ok@test.com>"), (DECLINED, None))
        self.assertEqual(self.run_mail("<>"), (DECLINED, None))
        self.assertEqual(self.run_mail("<matt@test.com>", relay=True), (DECLINED, None))
        self.assertEqual(self.run_mail("<matt@test.com>", "reject", "0"), (DECLINED, None))
        self.assertEqual(self.run_mail("<matt@test.com>", "reject_type", "temp"), (DENYSOFT, default))

    def test_dialogue(self) -> None:
        smtp = dialogue(["badmailfrom"], {"badmailfrom": LIST})
        smtp.send("EHLO client.test")
        self.assertEqual(smtp.send("MAIL FROM:<matt@test.com>"),
                         [(550, "5.7.1", "Your envelope sender is in my badmailfrom list")])
        self.assertEqual(codes(smtp.send("MAIL FROM:<matt@example.com>")), [250])
