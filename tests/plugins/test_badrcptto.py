"""badrcptto: the upstream decision table (is_match, get_host_and_to, hook_rcpt)."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted.mail.address import Address
from qptwisted.testing import make_engine
from tests.plugins.policy_support import codes, dialogue, plugin

LIST = ["matt@example.com", "@bad.example.com", r"^spam.*@example\.net$ No spam please"]


class BadRcptToUnitTests(unittest.TestCase):
    def setUp(self) -> None:
        self.brt = plugin(make_engine(["badrcptto"], {"badrcptto": LIST}), "badrcptto")

    def test_is_match(self) -> None:
        self.assertEqual(self.brt.is_match("matt@example.com", "example.com"), ("matt@example.com", None))
        self.assertIsNone(self.brt.is_match("matt2@example.com", "example.com"))
        self.assertEqual(self.brt.is_match("x@bad.example.com", "bad.example.com")[0], "@bad.example.com")
        self.assertEqual(self.brt.is_match("spammer@example.net", "example.net")[1], "No spam please")

    def test_get_host_and_to(self) -> None:
        self.assertIsNone(self.brt.get_host_and_to(None))
        self.assertIsNone(self.brt.get_host_and_to(Address("postmaster", "")))
        self.assertEqual(self.brt.get_host_and_to(Address.parse("<Matt@Example.COM>")),
                         ("example.com", "matt@example.com"))


class BadRcptToDialogueTests(unittest.TestCase):
    def test_table(self) -> None:
        smtp = dialogue(["badrcptto"], {"badrcptto": LIST})
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(smtp.send("RCPT TO:<MATT@example.com>"),
                         [(550, "5.7.1", "mail to matt@example.com not accepted here")])
        self.assertEqual(smtp.send("RCPT TO:<x@bad.example.com>"),
                         [(550, "5.7.1", "mail to @bad.example.com not accepted here")])
        self.assertEqual(smtp.send("RCPT TO:<SpamKing@example.net>"), [(550, "5.7.1", "No spam please")])
        self.assertEqual(codes(smtp.send("RCPT TO:<bob@example.com>")), [250])
