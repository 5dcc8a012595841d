"""spamassassin against a real spamd (Debian's spamassassin package), started once for the run."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT, Reply
from qptwisted.testing import make_engine, make_transaction, run_hook
from qptwisted.testing.daemons import GTUBE, free_port, start_spamd

from .scanner_support import AsyncDialogue, settle, shared

PLAIN = (b"From: Alice <alice@example.org>\nTo: bob@example.com\nSubject: lunch\n"
         b"Date: Sun, 29 Nov 2026 12:00:00 +0000\nMessage-Id: <lunch.1@example.org>\n"
         b"X-Spam-Flag: YES\nX-Spam-Status: No, forged\n\nShall we have lunch on Friday?\n")
SPAM = PLAIN.replace(b"Shall we", GTUBE + b"\nShall we")


class SpamdTests(unittest.TestCase):
    def setUp(self) -> None:
        self.spamd = shared("spamd", start_spamd)
        self.addCleanup(settle)

    def engine(self, *args: str, config: dict[str, Any] | None = None) -> Any:
        engine = make_engine([" ".join(["spamassassin", "spamd_socket", self.spamd.address, *args])],
                             config=config, clock=reactor)
        self.addCleanup(engine.close)
        return engine

    async def scan(self, engine: Any, message: bytes, **fields: Any) -> tuple[Any, Any]:
        transaction = make_transaction(engine, sender="<alice@example.org>",
                                       recipients=fields.pop("recipients", ["<bob@example.com>"]),
                                       message=message)
        for name, value in fields.items():
            setattr(transaction.connection, name, value)
        self.addCleanup(transaction.close)
        return await run_hook(engine, "data_post", transaction), transaction

    async def test_gtube_is_refused_with_the_configured_reply(self) -> None:
        engine = self.engine("reject", "10")
        result, transaction = await self.scan(engine, SPAM)
        self.assertEqual(result.code, DENY)
        self.assertEqual(result.value.code, 550)
        self.assertEqual(result.value.enhanced, "5.7.1")
        self.assertRegex(result.value.text, r"^Message refused as spam \(score 10\d\d(\.\d)?, limit 10\)$")
        note = transaction.notes["spamassassin"]
        self.assertEqual((note["result"], note["action"], note["is_spam"]), ("spam", "reject", True))
        self.assertIn("GTUBE", note["tests"])

    async def test_gtube_refused_temporarily_with_reject_type_temp(self) -> None:
        result, _ = await self.scan(self.engine("reject", "10", "reject_type", "temp"), SPAM)
        self.assertEqual((result.code, result.value.code, result.value.enhanced), (DENYSOFT, 451, "4.7.1"))

    async def test_plain_message_passes_with_spamds_headers(self) -> None:
        result, transaction = await self.scan(self.engine("reject", "10"), PLAIN)
        self.assertEqual(result.code, DECLINED)
        header = transaction.header
        self.assertRegex(header["X-Spam-Status"] or "", r"^No, score=-?\d+\.\d required=5\.0 tests=")
        self.assertIn("SpamAssassin", header["X-Spam-Checker-Version"] or "")
        self.assertEqual(transaction.notes["spamassassin"]["result"], "ham")
        # the forged flag is renamed, not ours; the forged status too (leave_old_headers rename)
        self.assertEqual(header.get_all("X-Spam-Flag"), None)
        self.assertEqual(header["X-Old-Spam-Flag"], "YES")
        self.assertEqual(header.get_all("X-Old-Spam-Status"), ["No, forged"])

    async def test_spam_below_the_reject_threshold_is_flagged(self) -> None:
        result, transaction = await self.scan(self.engine(), SPAM)
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(transaction.header.get_all("X-Spam-Flag"), ["YES"])
        self.assertTrue((transaction.header["X-Spam-Status"] or "").startswith("Yes, score=10"))
        self.assertEqual(transaction.header["X-Spam-Level"], "*" * 50)
        self.assertIn("GTUBE", transaction.notes["spamassassin"]["tests"])  # found in the folded status

    async def test_forged_flag_dropped(self) -> None:
        _, transaction = await self.scan(self.engine("leave_old_headers", "drop"), PLAIN)
        self.assertNotIn("X-Old-Spam-Flag", transaction.header)
        self.assertNotIn("X-Spam-Flag", transaction.header)
        self.assertNotIn("forged", transaction.header.to_bytes().decode())

    async def test_keep_still_renames_a_forged_flag(self) -> None:
        _, transaction = await self.scan(self.engine("leave_old_headers", "keep"), PLAIN)
        self.assertEqual(transaction.header["X-Old-Spam-Flag"], "YES")
        self.assertNotIn("X-Spam-Flag", transaction.header)
        self.assertIn("No, forged", transaction.header.get_all("X-Spam-Status") or [])

    async def test_forged_flag_never_survives_an_unscanned_message(self) -> None:
        _, transaction = await self.scan(self.engine("max_size", "100"), PLAIN)
        self.assertEqual(transaction.notes["spamassassin"]["result"], "skipped")
        self.assertNotIn("X-Spam-Flag", transaction.header)

    async def test_symbols_command_writes_the_headers_here(self) -> None:
        _, transaction = await self.scan(self.engine("command", "symbols"), SPAM)
        status = transaction.header["X-Spam-Status"] or ""
        self.assertRegex(status, r"^Yes, score=10\d\d\.\d required=5\.0 tests=.*GTUBE")
        self.assertEqual(transaction.header["X-Spam-Flag"], "YES")
        self.assertNotIn("X-Spam-Report", transaction.header)

    async def test_report_command_adds_the_report(self) -> None:
        _, transaction = await self.scan(self.engine("command", "report"), SPAM)
        report = transaction.header["X-Spam-Report"] or ""
        self.assertIn("* 1000 GTUBE", report)
        self.assertIn("GTUBE", transaction.notes["spamassassin"]["tests"])

    async def test_subject_munged_and_quarantine_asked(self) -> None:
        engine = self.engine("munge_subject_threshold", "5", "subject_prefix", "[SPAM]", "quarantine", "20")
        result, transaction = await self.scan(engine, SPAM)
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(transaction.header["Subject"], "[SPAM] lunch")
        self.assertEqual(transaction.notes["quarantine"], "spamassassin: score " +
                         f"{transaction.notes['spamassassin']['score']:g}")
        _, clean = await self.scan(engine, PLAIN)
        self.assertEqual(clean.header["Subject"], "lunch")
        self.assertNotIn("quarantine", clean.notes)

    async def test_user_is_the_single_recipient_or_spamd_user(self) -> None:
        await self.scan(self.engine(), PLAIN, recipients=["<carol.user@example.com>"])
        await self.scan(self.engine("spamd_user", "dave-prefs"), PLAIN,
                        recipients=["<a@example.com>", "<b@example.com>"])
        log = self.spamd.output()
        self.assertIn("for carol.user@example.com:", log)
        self.assertIn("for dave-prefs:", log)

    async def test_relay_clients_skipped_when_asked(self) -> None:
        _, transaction = await self.scan(self.engine("skip_relay_clients", "1"), SPAM, relay_client=True)
        self.assertEqual(transaction.notes["spamassassin"], {"result": "skipped", "daemon": "spamd",
                                                             "reason": "relay client"})

    async def test_dialogue_refuses_gtube_after_data(self) -> None:
        smtp = AsyncDialogue(make_engine([f"spamassassin spamd_socket {self.spamd.address} reject 10",
                                          "rcpt_ok", "queue/discard"],
                                         config={"rcpthosts": "example.com"}, clock=reactor))
        await smtp.start()
        replies = await smtp.deliver("<alice@example.org>", ["<bob@example.com>"], SPAM)
        self.assertEqual(replies[-1].code, 550)
        self.assertEqual(replies[-1].enhanced, "5.7.1")
        replies = await smtp.deliver("<alice@example.org>", ["<bob@example.com>"], PLAIN)
        self.assertEqual(replies[-1].code, 250)
        await smtp.close()
        await smtp.smtp.engine.close()


class SpamdOutageTests(unittest.TestCase):
    """spamd down or stuck: on_error decides (accept is the default for spam scanning)."""

    def setUp(self) -> None:
        self.addCleanup(settle)

    async def scan(self, *args: str, address: str | None = None) -> tuple[Any, Any]:
        address = address or f"127.0.0.1:{free_port()}"
        engine = make_engine([" ".join(["spamassassin", "spamd_socket", address, *args])], clock=reactor)
        self.addCleanup(engine.close)
        transaction = make_transaction(engine, sender="<a@example.org>", recipients=["<b@example.com>"],
                                       message=PLAIN)
        self.addCleanup(transaction.close)
        return await run_hook(engine, "data_post", transaction), transaction

    async def test_down_accepts_with_a_not_scanned_header(self) -> None:
        result, transaction = await self.scan()
        self.assertEqual(result.code, DECLINED)
        self.assertRegex(transaction.header["X-Not-Scanned"] or "",
                         r"^spamassassin on mx\.test: cannot connect to 127\.0\.0\.1:\d+: .*refused")
        self.assertEqual(transaction.notes["spamassassin"]["result"], "error")
        self.assertNotIn("X-Spam-Flag", transaction.header)

    async def test_down_defers_or_rejects_when_configured(self) -> None:
        deferred, _ = await self.scan("on_error", "defer")
        self.assertEqual((deferred.code, deferred.value),
                         (DENYSOFT, Reply(451, "4.7.1", "Message cannot be checked now (spamd unavailable), "
                                                        "try again later")))
        rejected, _ = await self.scan("on_error", "reject")
        self.assertEqual((rejected.code, rejected.value.code), (DENY, 554))

    async def test_stuck_spamd_times_out(self) -> None:
        spamd = shared("spamd", start_spamd)
        spamd.pause()
        try:
            result, transaction = await self.scan("timeout", "1", "connect_timeout", "1", "on_error", "defer",
                                                  address=spamd.address)
        finally:
            spamd.resume()
        self.assertEqual(result.code, DENYSOFT)
        self.assertIn("no answer within", transaction.notes["spamassassin"]["reason"])
