"""rcpt_regexp: regex and string rules with qpsmtpd return codes."""

from __future__ import annotations

from twisted.trial import unittest

from tests.plugins.policy_support import codes, dialogue

RULES = [
    r'/^(test|foo)@example\.(com|net)$/  DENY  "No test accounts here"',
    "info@example.com DENYSOFT Mailbox busy",
    "ceo@example.com OK",
    "/unclosed( DENY broken pattern is skipped",
    "nocode@example.com",
    "x@example.com BOGUS not a constant",
]


class RcptRegexpTests(unittest.TestCase):
    def test_table(self) -> None:
        smtp = dialogue(["rcpt_regexp"], {"rcpt_regexp": RULES})
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(smtp.send("RCPT TO:<Test@example.net>"), [(550, "5.7.1", "No test accounts here")])
        self.assertEqual(smtp.send("RCPT TO:<foo@example.com>")[0][0], 550)
        self.assertEqual(smtp.send("RCPT TO:<INFO@example.com>"), [(450, "4.7.1", "Mailbox busy")])
        self.assertEqual(codes(smtp.send("RCPT TO:<ceo@example.com>")), [250])
        self.assertEqual(codes(smtp.send("RCPT TO:<x@example.com>", "RCPT TO:<nocode@example.com>")),
                         [250, 250])

    def test_ok_accepts_even_outside_rcpthosts(self) -> None:
        smtp = dialogue(["rcpt_regexp"], {"rcpt_regexp": ["/@partner\\.test$/ OK"]})
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(codes(smtp.send("RCPT TO:<a@partner.test>", "RCPT TO:<a@other.test>")), [250, 550])
