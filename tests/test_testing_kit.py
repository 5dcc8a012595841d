"""The plugin author's kit: dialogues that wait for late hooks, deliveries that say where they stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.task import deferLater
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT, OK, Address, HookAnswer, Plugin, Transaction
from qptwisted.testing import CaptureQueue, SMTPDialogue, make_engine, make_transaction, run_hook


class Slow(Plugin):
    """Answers every hook kind late: on the clock, from a thread, from a coroutine."""

    name = "test_kit_slow"

    def hook_helo(self, transaction: Transaction, host: str) -> HookAnswer:
        return deferLater(self.clock, 5, lambda: DECLINED)

    def hook_ehlo(self, transaction: Transaction, host: str) -> HookAnswer:
        return self.defer_to_thread(lambda: DECLINED)

    async def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        await deferLater(self.clock, 2, lambda: None)
        if rcpt.user == "nobody":
            return DENY, "no such user"
        return DECLINED


class DialogueTests(unittest.TestCase):
    def test_late_hooks_answer_within_one_call(self) -> None:
        smtp = SMTPDialogue(make_engine([Slow, "rcpt_ok", CaptureQueue]))
        self.assertEqual(smtp.send("HELO client.test")[0].code, 250)
        replies = smtp.deliver("<a@example.org>", ["<bob@mx.test>"], "Subject: hi\n\nhello\n")
        self.assertTrue(replies.accepted)
        self.assertIsNone(replies.stopped_at)
        [delivered] = smtp.engine.plugin("testing/capture").delivered  # type: ignore[attr-defined]
        self.assertEqual((delivered.sender, delivered.recipients), ("<a@example.org>", ["<bob@mx.test>"]))
        self.assertEqual(delivered.body, b"hello\n")

    def test_deliver_says_where_it_stopped(self) -> None:
        smtp = SMTPDialogue(make_engine([Slow, "rcpt_ok", CaptureQueue]))
        replies = smtp.deliver("<a@example.org>", ["<nobody@mx.test>"], "Subject: hi\n\nhello\n")
        self.assertEqual(replies.stopped_at, "RCPT TO:<nobody@mx.test>")
        self.assertFalse(replies.accepted)
        self.assertIn((550, "5.7.1", "no such user"), replies)
        partly = smtp.deliver("<a@example.org>", ["<nobody@mx.test>", "<bob@mx.test>"], "Subject: x\n\ny\n")
        self.assertTrue(partly.accepted)
        self.assertEqual(partly.refused, ["RCPT TO:<nobody@mx.test>"])

    def test_advance_false_leaves_the_clock_to_the_test(self) -> None:
        smtp = SMTPDialogue(make_engine([Slow, "rcpt_ok"]), advance=False)
        self.assertEqual(smtp.send("HELO client.test"), [])
        smtp.engine.clock.advance(5)  # type: ignore[attr-defined]
        self.assertEqual(smtp.replies()[0].code, 250)


class TransactionTests(unittest.TestCase):
    def test_headers_and_body_in_one_call(self) -> None:
        engine = make_engine()
        txn = make_transaction(engine, sender="<a@example.org>", recipients=["<b@example.org>"],
                               headers={"Subject": "=?UTF-8?B?R3LDvMOfZQ==?=", "From": "a@example.org"},
                               body="line one\nline two\n")
        self.assertEqual(txn.header.get("Subject"), "Grüße")
        self.assertEqual(txn.body_bytes(), b"line one\nline two\n")
        self.assertEqual(txn.data_size, len(txn.message_bytes()))

    def test_plugin_dirs_and_classes_mix(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "local_deny.py").write_text(
            "from qptwisted import DENYSOFT, Plugin\n"
            "class LocalDeny(Plugin):\n"
            "    name = 'local_deny'\n"
            "    def hook_mail(self, transaction, sender, **params):\n"
            "        return DENYSOFT, 'not now'\n")
        engine = make_engine(["local_deny", CaptureQueue], plugin_dirs=[directory])
        self.assertEqual(engine.plugin("local_deny").source, str((directory / "local_deny.py").absolute()))
        result = self.successResultOf(run_hook(engine, "mail", make_transaction(engine),
                                               Address.parse("<a@example.org>")))
        self.assertEqual((result.code, result.message), (DENYSOFT, "not now"))
        self.assertIsInstance(engine.plugin("testing/capture"), CaptureQueue)
        with self.assertRaises(KeyError):
            engine.plugin("nope")
        self.assertEqual(OK, OK)
