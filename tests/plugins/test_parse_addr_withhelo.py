"""parse_addr_withhelo: no ESMTP parameters after HELO."""

from __future__ import annotations

from twisted.trial import unittest

from qpplugins.parse_addr_withhelo import parse_helo_path
from tests.plugins.policy_support import codes, dialogue


class ParseAddrWithHeloTests(unittest.TestCase):
    def test_parser(self) -> None:
        self.assertEqual(parse_helo_path("<a@example.org>"), ("<a@example.org>", {}))
        self.assertEqual(parse_helo_path(" <a@example.org>  "), ("<a@example.org>", {}))
        self.assertEqual(parse_helo_path("a@example.org"), ("a@example.org", {}))
        self.assertRaises(ValueError, parse_helo_path, "<a@example.org> SIZE=10")
        self.assertRaises(ValueError, parse_helo_path, "a@example.org BODY=8BITMIME")

    def test_helo_client(self) -> None:
        smtp = dialogue(["parse_addr_withhelo"])
        smtp.send("HELO old.test")
        self.assertEqual(smtp.send("MAIL FROM:<a@example.org> SIZE=100"),
                         [(501, "5.5.4", "Syntax error in parameters")])
        self.assertEqual(codes(smtp.send("MAIL FROM:<a@example.org>")), [250])
        self.assertEqual(codes(smtp.send("RCPT TO:<bob@example.com> NOTIFY=NEVER")), [501])
        self.assertEqual(codes(smtp.send("RCPT TO:<bob@example.com>")), [250])

    def test_ehlo_client_keeps_parameters(self) -> None:
        smtp = dialogue(["parse_addr_withhelo"])
        smtp.send("EHLO new.test")
        self.assertEqual(codes(smtp.send("MAIL FROM:<a@example.org> SIZE=100")), [250])
