"""tarpit: suspicious clients wait for every reply; others do not."""

from __future__ import annotations

from twisted.trial import unittest

from tests.plugins.policy_support import advance, codes, dialogue


class TarpitTests(unittest.TestCase):
    def test_clean_client_is_not_delayed(self) -> None:
        smtp = dialogue(["tarpit delay 5"])
        self.assertEqual(codes(smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")), [250, 250])

    def test_naughty_client_waits(self) -> None:
        smtp = dialogue(["badmailfrom reject naughty", "tarpit delay 5"], {"badmailfrom": ["x@spam.test"]})
        smtp.send("EHLO client.test")
        self.assertEqual(codes(smtp.send("MAIL FROM:<x@spam.test>")), [250])
        self.assertEqual(smtp.send("RCPT TO:<bob@example.com>"), [])
        advance(smtp, 4.9)
        self.assertEqual(smtp.replies(), [])
        advance(smtp, 0.1)
        self.assertEqual(codes(smtp.replies()), [250])

    def test_note_value_capped_and_relay_clients_exempt(self) -> None:
        smtp = dialogue(["tarpit max 3"])
        smtp.session.connection.notes["tarpit"] = 100
        self.assertEqual(smtp.send("EHLO client.test"), [])
        advance(smtp, 3)
        self.assertEqual(codes(smtp.replies()), [250])
        smtp.session.connection.relay_client = True
        self.assertEqual(codes(smtp.send("NOOP")), [250])

    def test_negative_karma_and_chosen_hooks(self) -> None:
        smtp = dialogue(["tarpit delay 2 hooks rcpt"])
        smtp.session.connection.notes["karma"] = -1
        self.assertEqual(codes(smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")), [250, 250])
        self.assertEqual(smtp.send("RCPT TO:<bob@example.com>"), [])
        advance(smtp, 2)
        self.assertEqual(codes(smtp.replies()), [250])
