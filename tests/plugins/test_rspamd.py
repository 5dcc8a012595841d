"""rspamd: against a real rspamd (Debian's package, a minimal local config), and against a scripted
stand-in of its /checkv2 JSON for the actions a minimal rspamd does not take on demand."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT, OK, Reply
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.daemons import GTUBE, free_port, start_rspamd

from .scanner_support import AsyncDialogue, RspamdStandIn, dkim_key, dkim_verify, settle, shared

CLEAN = (b"From: alice@example.org\nTo: bob@example.com\nSubject: lunch\n"
         b"Date: Sun, 29 Nov 2026 12:00:00 +0000\nMessage-Id: <lunch.1@example.org>\n"
         b"X-Spam: Yes\nX-Rspamd-Action: no action\n\nShall we have lunch on Friday?\n")
SPAM = CLEAN.replace(b"Shall we", GTUBE + b"\nShall we")


def start_signing_rspamd() -> Any:
    return start_rspamd(dkim_domain="example.org", dkim_key=dkim_key()[0])


class Base(unittest.TestCase):
    def setUp(self) -> None:
        self.addCleanup(settle)

    def engine(self, address: str, *args: str) -> Any:
        engine = make_engine([" ".join(["rspamd", "rspamd_socket", address, *args])], clock=reactor)
        self.addCleanup(engine.close)
        return engine

    async def scan(self, engine: Any, message: bytes = CLEAN, hook: str = "data_post",
                   **connection: Any) -> tuple[Any, Any]:
        transaction = make_transaction(engine, make_connection(**connection), sender="<alice@example.org>",
                                       recipients=["<bob@example.com>", "<carol@example.com>"],
                                       message=message)
        self.addCleanup(transaction.close)
        return await run_hook(engine, hook, transaction), transaction


class RealRspamdTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.rspamd = shared("rspamd", start_signing_rspamd)

    async def test_gtube_is_refused(self) -> None:
        result, transaction = await self.scan(self.engine(self.rspamd.address), SPAM)
        self.assertEqual((result.code, result.value), (DENY, Reply(550, "5.7.1", "Gtube pattern")))
        self.assertEqual(transaction.notes["rspamd"]["result"], "reject")
        self.assertEqual(transaction.notes["rspamd"]["symbols"], ["GTUBE"])

    async def test_gtube_only_logged_with_reject_0(self) -> None:
        result, transaction = await self.scan(self.engine(self.rspamd.address, "reject", "0"), SPAM)
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(transaction.header["X-Rspamd-Action"], "reject")

    async def test_clean_is_accepted_with_headers(self) -> None:
        result, transaction = await self.scan(self.engine(self.rspamd.address), CLEAN)
        self.assertEqual(result.code, DECLINED)
        header = transaction.header
        self.assertEqual(header.get_all("X-Rspamd-Action"), ["no action"])
        self.assertRegex(header["X-Rspamd-Score"] or "", r"^-?\d+\.\d\d / 15\.00$")
        self.assertNotIn("X-Spam", header)  # the forged one is gone
        # rspamd's milter_headers module: its changes are applied
        self.assertTrue((header["X-Spamd-Result"] or "").startswith("default: False ["))
        self.assertIn("X-Rspamd-Server", header)

    async def test_dkim_signature_of_rspamd_is_added_and_verifies(self) -> None:
        result, transaction = await self.scan(self.engine(self.rspamd.address), CLEAN, remote_ip="127.0.0.1")
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(transaction.header.keys()[0], "DKIM-Signature")
        self.assertIn("d=example.org", transaction.header["DKIM-Signature"] or "")
        self.assertTrue(dkim_verify(transaction.message_bytes()))
        unsigned, _ = await self.scan(self.engine(self.rspamd.address, "dkim", "no"), CLEAN,
                                      remote_ip="127.0.0.1")
        self.assertNotIn("DKIM-Signature", _.header)

    async def test_dialogue(self) -> None:
        smtp = AsyncDialogue(make_engine([f"rspamd rspamd_socket {self.rspamd.address}", "rcpt_ok",
                                          "queue/discard"], config={"rcpthosts": "example.com"},
                                         clock=reactor))
        await smtp.start()
        replies = await smtp.deliver("<alice@example.org>", ["<bob@example.com>"], SPAM)
        self.assertEqual(replies[-1], (550, "5.7.1", "Gtube pattern"))
        replies = await smtp.deliver("<alice@example.org>", ["<bob@example.com>"], CLEAN)
        self.assertEqual(replies[-1].code, 250)
        await smtp.close()
        await smtp.smtp.engine.close()


class StandInTests(Base):
    """rspamd's documented /checkv2 answers, from a scripted stand-in (not a real rspamd)."""

    def setUp(self) -> None:
        super().setUp()
        self.rspamd = RspamdStandIn(self)

    def answer(self, action: str, **extra: Any) -> None:
        self.rspamd.answer = {"action": action, "score": 7.5, "required_score": 15.0,
                              "symbols": {"B_RULE": {"score": 7.0}, "A_RULE": {"score": 0.5}}, **extra}

    async def test_envelope_goes_in_the_request_headers(self) -> None:
        from qptwisted.mail.connection import TLSInfo

        engine = self.engine(self.rspamd.address)
        await self.scan(engine, CLEAN, remote_ip="192.0.2.7", hello_host="client.test",
                        remote_host="client.example.net", auth_user="alice", tls=TLSInfo("TLSv1.3", "AES"))
        [request] = self.rspamd.requests
        headers = request["headers"]
        self.assertEqual(request["path"], "/checkv2")
        self.assertEqual(headers["From"], ["alice@example.org"])
        self.assertEqual(headers["Rcpt"], ["bob@example.com", "carol@example.com"])
        self.assertEqual((headers["Ip"], headers["Helo"], headers["Hostname"], headers["User"]),
                         (["192.0.2.7"], ["client.test"], ["client.example.net"], ["alice"]))
        self.assertEqual((headers["Tls-Cipher"], headers["Tls-Version"]), (["AES"], ["TLSv1.3"]))
        self.assertEqual(headers["Mta-Name"], ["mx.test"])
        self.assertRegex(headers["Queue-Id"][0], r"^\d+\.\d+$")
        self.assertTrue(request["body"].startswith(b"From: alice@example.org\n"))
        self.assertTrue(request["body"].endswith(b"Shall we have lunch on Friday?\n"))

    async def test_over_a_unix_socket(self) -> None:
        import shutil
        import tempfile

        directory = tempfile.mkdtemp(prefix="qpt-rspamd-")  # short: a socket path has ~100 bytes at most
        self.addCleanup(shutil.rmtree, directory, True)
        path = f"{directory}/rspamd.sock"
        rspamd = RspamdStandIn(self, {"action": "add header", "score": 6.5, "required_score": 15.0},
                               unix=path)
        result, transaction = await self.scan(self.engine(path))
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(transaction.header["X-Spam"], "Yes")
        self.assertEqual(rspamd.requests[0]["headers"]["Host"], ["rspamd"])

    async def test_soft_reject_and_greylist_defer(self) -> None:
        engine = self.engine(self.rspamd.address)
        self.answer("soft reject", messages={"smtp_message": "Ratelimit exceeded"})
        result, _ = await self.scan(engine)
        self.assertEqual((result.code, result.value), (DENYSOFT, Reply(451, "4.7.1", "Ratelimit exceeded")))
        self.answer("greylist")
        result, _ = await self.scan(engine)
        self.assertEqual((result.code, result.value),
                         (DENYSOFT, Reply(451, "4.7.1", "Greylisted, try again later")))
        result, _ = await self.scan(self.engine(self.rspamd.address, "greylist", "no"))
        self.assertEqual(result.code, DECLINED)

    async def test_reject_naughty_is_left_to_naughty(self) -> None:
        self.answer("reject")
        result, transaction = await self.scan(self.engine(self.rspamd.address, "reject", "naughty"))
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(transaction.connection.notes["naughty"], "Spam message rejected")

    async def test_rewrite_subject_and_add_header(self) -> None:
        engine = self.engine(self.rspamd.address)
        self.answer("rewrite subject", subject="[SPAM] lunch")
        _, transaction = await self.scan(engine)
        self.assertEqual(transaction.header["Subject"], "[SPAM] lunch")
        self.answer("rewrite subject")
        _, transaction = await self.scan(engine)
        self.assertEqual(transaction.header["Subject"], "*** SPAM *** lunch")
        self.answer("add header")
        _, transaction = await self.scan(self.engine(self.rspamd.address, "spam_header", "X-Is-Spam"))
        self.assertEqual(transaction.header["X-Is-Spam"], "Yes")
        self.assertEqual(transaction.notes["rspamd"]["symbols"], ["A_RULE", "B_RULE"])

    async def test_quarantine_and_discard(self) -> None:
        engine = self.engine(self.rspamd.address)
        self.answer("quarantine")
        _, transaction = await self.scan(engine)
        self.assertEqual(transaction.notes["quarantine"], "rspamd: score 7.5")
        self.answer("discard")
        result, transaction = await self.scan(engine)
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(transaction.notes["discard"], "rspamd: score 7.5")
        queued = await run_hook(engine, "queue", transaction)
        self.assertEqual((queued.code, queued.message), (OK, "Queued"))

    async def test_milter_header_changes_with_positions(self) -> None:
        self.answer("no action", milter={
            "remove_headers": {"X-Old": 0, "X-Twice": -1, "Subject": 1},
            "add_headers": {"X-Top": {"value": "first", "order": 0},
                            "X-Bottom": {"value": "last", "order": -1},
                            "X-Plain": "appended",
                            "X-Multi": [{"value": "one\r\n\ttwo"}, {"value": "three", "order": 1}]}},
            **{"dkim-signature": ["v=1; d=a.example; b=one", "v=1; d=b.example; b=two"]})
        message = b"X-Old: 1\nX-Twice: a\nSubject: s\nX-Twice: b\nX-Old: 2\n\nbody\n"
        _, transaction = await self.scan(self.engine(self.rspamd.address, "add_headers", "never"), message)
        self.assertEqual(transaction.header.to_bytes(),
                         b"DKIM-Signature: v=1; d=a.example; b=one\nDKIM-Signature: v=1; d=b.example; b=two\n"
                         b"X-Top: first\nX-Multi: three\nX-Twice: a\nX-Bottom: last\nX-Plain: appended\n"
                         b"X-Multi: one\n\ttwo\n")

    async def test_add_headers_spam_only(self) -> None:
        engine = self.engine(self.rspamd.address, "add_headers", "spam")
        _, transaction = await self.scan(engine)
        self.assertNotIn("X-Rspamd-Action", transaction.header)
        self.answer("add header")
        _, transaction = await self.scan(engine)
        self.assertEqual(transaction.header["X-Rspamd-Action"], "add header")

    async def test_broken_answers_follow_on_error(self) -> None:
        engine = self.engine(self.rspamd.address)
        self.rspamd.answer = b"this is not json"
        result, transaction = await self.scan(engine)
        self.assertEqual(result.code, DECLINED)
        self.assertIn("not JSON", transaction.header["X-Not-Scanned"] or "")
        self.rspamd.status = 500
        self.rspamd.answer = {"error": "internal"}
        result, transaction = await self.scan(self.engine(self.rspamd.address, "on_error", "defer"))
        self.assertEqual(result.code, DENYSOFT)
        self.assertIn("HTTP 500", transaction.notes["rspamd"]["reason"])
        self.rspamd.status = 200
        self.rspamd.answer = {"action": "reject", "score": "lots"}
        result, transaction = await self.scan(engine)
        self.assertEqual(result.code, DECLINED)
        self.assertIn("no usable score", transaction.notes["rspamd"]["reason"])
        self.rspamd.answer = {"score": 1}
        result, transaction = await self.scan(self.engine(self.rspamd.address, "on_error", "reject"))
        self.assertEqual((result.code, result.value.code), (DENY, 554))

    async def test_slow_rspamd_times_out(self) -> None:
        self.rspamd.delay = Deferred()
        try:
            result, transaction = await self.scan(self.engine(self.rspamd.address, "timeout", "1",
                                                              "connect_timeout", "1", "on_error", "defer"))
        finally:
            self.rspamd.delay.callback(None)
        self.assertEqual(result.code, DENYSOFT)
        self.assertIn("no answer within 2s", transaction.notes["rspamd"]["reason"])

    async def test_down(self) -> None:
        result, transaction = await self.scan(self.engine(f"127.0.0.1:{free_port()}"))
        self.assertEqual(result.code, DECLINED)
        self.assertIn("rspamd on mx.test:", transaction.header["X-Not-Scanned"] or "")
