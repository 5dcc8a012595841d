"""naughty: deferred rejections carried out at one phase (reject naughty)."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted import DECLINED, DENY_DISCONNECT, DENYSOFT, ConfigError
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.policy_support import codes, dialogue, plugin

BAD = {"badmailfrom": ["spammer@example.net"]}


class NaughtyDialogueTests(unittest.TestCase):
    def test_deferred_sender_refusal_happens_at_rcpt_and_disconnects(self) -> None:
        smtp = dialogue(["badmailfrom reject naughty", "naughty"], BAD)
        smtp.send("EHLO client.test")
        self.assertEqual(codes(smtp.send("MAIL FROM:<spammer@example.net>")), [250])
        self.assertEqual(smtp.send("RCPT TO:<bob@example.com>"),
                         [(550, "5.7.1", "Your envelope sender is in my badmailfrom list")])
        self.assertTrue(smtp.closed)

    def test_clean_client_passes(self) -> None:
        smtp = dialogue(["badmailfrom reject naughty", "naughty"], BAD)
        smtp.send("EHLO client.test")
        self.assertEqual(codes(smtp.send("MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.com>")),
                         [250, 250])

    def test_phase_and_reject_type(self) -> None:
        smtp = dialogue(["badmailfrom reject naughty", "naughty reject data reject_type temp"], BAD)
        smtp.send("EHLO client.test")
        self.assertEqual(codes(smtp.send("MAIL FROM:<spammer@example.net>", "RCPT TO:<bob@example.com>")),
                         [250, 250])
        self.assertEqual(smtp.send("DATA")[0][:2], (451, "4.7.1"))
        self.assertFalse(smtp.closed)

    def test_deferring_plugins_reject_type_wins(self) -> None:
        smtp = dialogue(["badmailfrom reject naughty reject_type temp", "naughty"], BAD)
        smtp.send("EHLO client.test", "MAIL FROM:<spammer@example.net>")
        self.assertEqual(smtp.send("RCPT TO:<bob@example.com>")[0][0], 450)


class NaughtyUnitTests(unittest.TestCase):
    def test_messages_accumulate_and_unknown_phase_falls_back_to_rcpt(self) -> None:
        engine = make_engine(["naughty reject nonsense"])
        naughty = plugin(engine, "naughty")
        self.assertEqual(naughty.phase, "rcpt")
        txn = make_transaction(engine)
        self.assertEqual(naughty.store_deferred_reject(txn, "one"), DECLINED)
        naughty.store_deferred_reject(txn, "two")
        result = self.successResultOf(run_hook(engine, "rcpt", txn, None))
        self.assertEqual((result.code, result.message), (DENY_DISCONNECT, "one\ntwo"))
        self.assertTrue(txn.connection.notes["rejected"])

    def test_clean_declines(self) -> None:
        engine = make_engine(["naughty reject mail reject_type temp"])
        txn = make_transaction(engine)
        self.assertEqual(self.successResultOf(run_hook(engine, "mail", txn, None)).code, DECLINED)
        txn.connection.notes["naughty"] = "bad"
        self.assertEqual(self.successResultOf(run_hook(engine, "mail", txn, None)).code, DENYSOFT)

    def test_bad_arguments_fail_at_start(self) -> None:
        self.assertRaises((ConfigError, ValueError), make_engine, ["naughty reject"])
