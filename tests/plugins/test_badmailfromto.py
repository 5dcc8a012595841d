"""badmailfromto: sender/recipient pairs."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted.mail.address import Address
from qptwisted.testing import make_engine
from tests.plugins.policy_support import codes, dialogue, plugin

CONFIG = {"badmailfromto": ["bad@example.org\tbob@example.com", "@spam.test  carol@example.com"]}


class BadMailFromToTests(unittest.TestCase):
    def test_is_sender_immune(self) -> None:
        bmft = plugin(make_engine(["badmailfromto"], CONFIG), "badmailfromto")
        self.assertTrue(bmft.is_sender_immune(Address.parse("<>")))
        self.assertTrue(bmft.is_sender_immune(None))
        self.assertFalse(bmft.is_sender_immune(Address.parse("<a@b.test>")))
        self.assertTrue(plugin(make_engine(["badmailfromto"]), "badmailfromto")
                        .is_sender_immune(Address.parse("<a@b.test>")))

    def test_pair_refused_other_recipients_accepted(self) -> None:
        smtp = dialogue(["badmailfromto"], CONFIG)
        smtp.send("EHLO client.test", "MAIL FROM:<Bad@Example.org>")
        self.assertEqual(smtp.send("RCPT TO:<bob@example.com>"),
                         [(550, "5.1.1", "mail to bob@example.com not accepted here (#5.1.1)")])
        self.assertEqual(codes(smtp.send("RCPT TO:<carol@example.com>")), [250])

    def test_domain_sender(self) -> None:
        smtp = dialogue(["badmailfromto"], CONFIG)
        smtp.send("EHLO client.test", "MAIL FROM:<x@spam.test>")
        self.assertEqual(codes(smtp.send("RCPT TO:<carol@example.com>", "RCPT TO:<bob@example.com>")),
                         [550, 250])
