"""virus/clamdscan against a real clamd (Debian's clamav-daemon) with a signature database of its own.

No signatures can be downloaded here, so the test's clamd gets one ``.ndb``
body signature for the EICAR test string; its StreamMaxLength is 1M.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT, Reply
from qptwisted.testing import make_engine, make_transaction, run_hook
from qptwisted.testing.daemons import EICAR, EICAR_SIGNATURE, start_clamd

from .scanner_support import AsyncDialogue, settle, shared

CLEAN = b"From: alice@example.org\nTo: bob@example.com\nSubject: hi\n\nNothing to see.\n"
INFECTED = b"From: alice@example.org\nSubject: body\nX-Virus-Checked: Checked by forgery\n\n" + EICAR + b"\n"
ATTACHMENT = (b"From: alice@example.org\nSubject: attachment\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/mixed; boundary=\"b1\"\n\n"
              b"--b1\nContent-Type: text/plain\n\nsee attached\n"
              b"--b1\nContent-Type: application/octet-stream; name=\"game.com\"\n"
              b"Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"game.com\"\n\n"
              + base64.encodebytes(EICAR) + b"--b1--\n")
#: more than the test clamd's StreamMaxLength (1M), spooled to disk (size_threshold 64k)
HUGE = b"Subject: huge\n\n" + (b"y" * 77 + b"\n") * 20000


class ClamdTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clamd = shared("clamd", start_clamd)
        self.addCleanup(settle)

    def engine(self, *args: str, socket: str | None = None) -> Any:
        line = " ".join(["virus/clamdscan", "clamd_socket", socket or self.clamd.address, *args])
        engine = make_engine([line], config={"size_threshold": "65536"}, clock=reactor)
        self.addCleanup(engine.close)
        return engine

    async def scan(self, engine: Any, message: bytes) -> tuple[Any, Any]:
        transaction = make_transaction(engine, sender="<alice@example.org>", recipients=["<bob@example.com>"],
                                       message=message)
        self.addCleanup(transaction.close)
        return await run_hook(engine, "data_post", transaction), transaction

    async def test_eicar_in_the_body_is_refused(self) -> None:
        result, transaction = await self.scan(self.engine(), INFECTED)
        self.assertEqual((result.code, result.value),
                         (DENY, Reply(550, "5.7.1", f"Virus found: {EICAR_SIGNATURE}")))
        self.assertEqual(transaction.notes["virus"], EICAR_SIGNATURE)
        self.assertEqual(transaction.notes["virus/clamdscan"]["action"], "reject")

    async def test_eicar_as_a_base64_attachment_is_found(self) -> None:
        result, transaction = await self.scan(self.engine(), ATTACHMENT)
        self.assertEqual(result.code, DENY)
        self.assertEqual(transaction.notes["virus/clamdscan"]["virus"], EICAR_SIGNATURE)

    async def test_over_the_unix_socket(self) -> None:
        result, _ = await self.scan(self.engine(socket=self.clamd.extra["socket"]), ATTACHMENT)
        self.assertEqual(result.code, DENY)

    async def test_clean_message_passes_with_the_checked_header(self) -> None:
        result, transaction = await self.scan(self.engine(), CLEAN)
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(transaction.header.get_all("X-Virus-Checked"), ["Checked by ClamAV on mx.test"])
        self.assertEqual(transaction.notes["virus/clamdscan"], {"result": "clean", "daemon": "clamd"})

    async def test_forged_checked_header_goes_even_when_a_virus_is_marked(self) -> None:
        result, transaction = await self.scan(self.engine("deny_viruses", "no"), INFECTED)
        self.assertEqual(result.code, DECLINED)
        self.assertNotIn("X-Virus-Checked", transaction.header)
        self.assertEqual(transaction.header["X-Virus-Found"], EICAR_SIGNATURE)
        self.assertNotIn("quarantine", transaction.notes)

    async def test_quarantine_instead_of_refusing(self) -> None:
        result, transaction = await self.scan(self.engine("deny_viruses", "quarantine"), ATTACHMENT)
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(transaction.notes["quarantine"], f"virus/clamdscan: {EICAR_SIGNATURE}")

    async def test_temporary_refusal(self) -> None:
        result, _ = await self.scan(self.engine("reject_type", "temp"), INFECTED)
        self.assertEqual((result.code, result.value.code, result.value.enhanced), (DENYSOFT, 451, "4.7.1"))

    async def test_over_stream_max_length_is_skipped_not_clean(self) -> None:
        result, transaction = await self.scan(self.engine("max_size", "100M"), HUGE)
        self.assertIsNotNone(transaction.body.filename)  # streamed from a spool file
        self.assertEqual(result.code, DECLINED)
        note = transaction.notes["virus/clamdscan"]
        self.assertEqual(note["result"], "skipped")
        self.assertIn("StreamMaxLength", note["reason"])
        self.assertNotIn("X-Virus-Checked", transaction.header)

    async def test_over_max_size_is_skipped_without_asking(self) -> None:
        result, transaction = await self.scan(self.engine("max_size", "1k"), HUGE)
        self.assertEqual(result.code, DECLINED)
        self.assertIn("larger than max_size 1k", transaction.notes["virus/clamdscan"]["reason"])

    async def test_scan_all_0_only_scans_multipart(self) -> None:
        engine = self.engine("scan_all", "0")
        result, transaction = await self.scan(engine, INFECTED)
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(transaction.notes["virus/clamdscan"]["reason"],
                         "not a multipart message (scan_all 0)")
        result, _ = await self.scan(engine, ATTACHMENT)
        self.assertEqual(result.code, DENY)

    async def test_dialogue(self) -> None:
        smtp = AsyncDialogue(make_engine([f"virus/clamdscan clamd_socket {self.clamd.address}", "rcpt_ok",
                                          "queue/discard"], config={"rcpthosts": "example.com"},
                                         clock=reactor))
        await smtp.start()
        replies = await smtp.deliver("<alice@example.org>", ["<bob@example.com>"], ATTACHMENT)
        self.assertEqual(replies[-1], (550, "5.7.1", f"Virus found: {EICAR_SIGNATURE}"))
        replies = await smtp.deliver("<alice@example.org>", ["<bob@example.com>"], CLEAN)
        self.assertEqual(replies[-1].code, 250)
        await smtp.close()
        await smtp.smtp.engine.close()


class ClamdOutageTests(unittest.TestCase):
    """clamd stopped or stuck: defer (451 4.7.1) by default."""

    def setUp(self) -> None:
        self.addCleanup(settle)

    async def scan(self, address: str, *args: str) -> tuple[Any, Any]:
        engine = make_engine([" ".join(["virus/clamdscan", "clamd_socket", address, *args])], clock=reactor)
        self.addCleanup(engine.close)
        transaction = make_transaction(engine, sender="<a@example.org>", recipients=["<b@example.com>"],
                                       message=CLEAN)
        self.addCleanup(transaction.close)
        return await run_hook(engine, "data_post", transaction), transaction

    async def test_clamd_stopped_defers(self) -> None:
        clamd = start_clamd_or_skip()
        address, socket = clamd.address, clamd.extra["socket"]
        clamd.stop()
        for where in (address, socket):
            result, transaction = await self.scan(where)
            self.assertEqual(result.code, DENYSOFT)
            self.assertEqual(result.value, Reply(451, "4.7.1", "Message cannot be checked now (clamd "
                                                               "unavailable), try again later"))
            self.assertEqual(transaction.notes["virus/clamdscan"]["action"], "defer")
            self.assertNotIn("X-Virus-Checked", transaction.header)

    async def test_clamd_stopped_accept_marks_the_message(self) -> None:
        clamd = start_clamd_or_skip()
        clamd.stop()
        result, transaction = await self.scan(clamd.address, "on_error", "accept")
        self.assertEqual(result.code, DECLINED)
        self.assertIn("virus/clamdscan on mx.test: cannot connect", transaction.header["X-Not-Scanned"] or "")

    async def test_stuck_clamd_times_out(self) -> None:
        clamd = shared("clamd", start_clamd)
        clamd.pause()
        try:
            result, transaction = await self.scan(clamd.address, "timeout", "1", "connect_timeout", "1")
        finally:
            clamd.resume()
        self.assertEqual(result.code, DENYSOFT)
        self.assertIn("no answer within 2s", transaction.notes["virus/clamdscan"]["reason"])


def start_clamd_or_skip() -> Any:
    from qptwisted.testing.daemons import start_or_skip

    return start_or_skip(start_clamd)
