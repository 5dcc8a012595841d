"""dont_require_anglebrackets: bare envelope addresses are accepted."""

from __future__ import annotations

from twisted.trial import unittest

from tests.plugins.policy_support import codes, dialogue, queued


class AngleBracketTests(unittest.TestCase):
    def test_without_plugin_bare_addresses_are_refused(self) -> None:
        smtp = dialogue([])
        smtp.send("EHLO client.test")
        self.assertEqual(codes(smtp.send("MAIL FROM:alice@example.org")), [501])

    def test_bare_addresses_are_wrapped(self) -> None:
        smtp = dialogue(["dont_require_anglebrackets"])
        smtp.send("EHLO client.test")
        self.assertEqual(smtp.send("MAIL FROM:alice@example.org SIZE=10")[0][:2], (250, "2.1.0"))
        self.assertEqual(
            smtp.send("RCPT TO:bob@example.com"), [(250, "2.1.5", "<bob@example.com>, recipient ok")]
        )
        self.assertEqual(codes(smtp.send("RCPT TO:<carol@example.com>")), [250])
        self.assertEqual(codes(smtp.send("RCPT TO:not-an-address")), [501])
        smtp.send("DATA")
        self.assertEqual(codes(smtp.message("Subject: x\n\nhi\n")), [250])
        self.assertEqual(len(queued(smtp.engine)), 1)
