"""milter: real milters from Debian's packages (OpenDKIM signs; rspamd's proxy refuses and adds
headers; clamav-milter refuses a virus, marks clean mail and defers without its clamd), and a
scripted stand-in milter for every action, change and failure the real ones do not show on demand."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from qptwisted.testing import make_engine
from qptwisted.testing.daemons import (
    EICAR,
    EICAR_SIGNATURE,
    GTUBE,
    free_port,
    start_clamav_milter,
    start_clamd,
    start_opendkim,
    start_rspamd,
)

from .scanner_support import (
    AsyncDialogue,
    Capture,
    ScriptedMilter,
    dkim_key,
    dkim_verify,
    milter_packet,
    settle,
    shared,
)

MESSAGE = (b"From: alice@example.org\nTo: bob@example.com\nSubject: lunch\n"
           b"Date: Sun, 29 Nov 2026 12:00:00 +0000\nMessage-Id: <lunch.1@example.org>\n"
           b"X-Folded:  two\n\tlines\nX-Remove: me\n\nShall we have lunch?\n.leading dot\n")
SENDER, RCPT = "<alice@example.org>", "<bob@example.com>"
CONTINUE = [milter_packet(b"c")]


def start_opendkim_for_example_org() -> Any:
    return start_opendkim("example.org", dkim_key()[0])


class Base(unittest.TestCase):
    def setUp(self) -> None:
        self.addCleanup(settle)

    def dialogue(self, *lines: str, remote_ip: str = "192.0.2.1") -> AsyncDialogue:
        engine = make_engine([*lines, "rcpt_ok", Capture], config={"rcpthosts": "example.com"}, clock=reactor)
        self.capture: Capture = engine.plugins[-1]  # type: ignore[assignment]
        smtp = AsyncDialogue(engine, remote_ip=remote_ip)
        self.addCleanup(engine.close)
        self.addCleanup(smtp.close)
        return smtp

    async def refused_then_stored(self, smtp: AsyncDialogue, bad: bytes) -> tuple[Any, bytes]:
        """Greet, send the message with ``bad`` in its body (refused), then as it is: (refusal, stored)."""
        await smtp.start()
        refused = (await smtp.deliver(SENDER, [RCPT], MESSAGE.replace(b"Shall we", bad + b"\nShall we")))[-1]
        self.assertEqual(self.capture.messages, [])
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 250)
        [stored] = self.capture.messages
        return refused, stored


class RealMilterTests(Base):
    async def test_opendkim_signs_and_the_signature_verifies(self) -> None:
        opendkim = shared("opendkim", start_opendkim_for_example_org)
        smtp = self.dialogue(f"milter inet:{opendkim.port}@127.0.0.1", remote_ip="127.0.0.1")
        self.assertEqual((await smtp.start())[0].code, 220)
        replies = await smtp.deliver(SENDER, [RCPT], MESSAGE)
        self.assertEqual(replies[-1].code, 250, replies)
        [stored] = self.capture.messages
        self.assertTrue(stored.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; "
                                          b"d=example.org;"))
        self.assertTrue(dkim_verify(stored))
        self.assertEqual(self.capture.notes[0]["milter"]["changes"], ["insert"])

    async def test_rspamd_milter_refuses_gtube_and_adds_headers(self) -> None:
        rspamd = shared("rspamd", start_rspamd_signing)
        smtp = self.dialogue(f"milter 127.0.0.1:{rspamd.extra['milter_port']}")
        refused, stored = await self.refused_then_stored(smtp, GTUBE)
        self.assertEqual(refused, (554, "5.7.1", "Gtube pattern"))
        self.assertIn(b"\nX-Spamd-Result: default: False [", stored)
        self.assertIn(b"\nX-Rspamd-Server: ", stored)

    async def test_clamav_milter_refuses_a_virus_with_its_reply_and_marks_clean_mail(self) -> None:
        milter = shared("clamav-milter", start_clamav_milter_with_clamd)
        smtp = self.dialogue(f"milter inet:{milter.port}@127.0.0.1")
        refused, stored = await self.refused_then_stored(smtp, EICAR)
        self.assertEqual(refused, (550, "5.7.1", f"Infected with {EICAR_SIGNATURE}"))
        self.assertIn(b"\nX-Remove: me\nX-Virus-Scanned: clamav-milter ", stored)
        self.assertIn(b" at mx.test\nX-Virus-Status: Clean\n\nShall we have lunch?\n", stored)

    async def test_clamav_milter_without_clamd_defers(self) -> None:
        milter = shared("clamav-milter-no-clamd", start_clamav_milter, _Nothing())
        smtp = self.dialogue(f"milter inet:{milter.port}@127.0.0.1")
        await smtp.start()
        replies = await smtp.deliver(SENDER, [RCPT], MESSAGE)
        self.assertEqual(replies[-1].code, 451, replies)
        self.assertEqual(self.capture.messages, [])


class _Nothing:
    """Where clamav-milter looks for a clamd that is not there: a port nothing listens on."""

    def __init__(self) -> None:
        self.port = free_port()


def start_clamav_milter_with_clamd() -> Any:
    return start_clamav_milter(shared("clamd", start_clamd))


def start_rspamd_signing() -> Any:
    return start_rspamd(dkim_domain="example.org", dkim_key=dkim_key()[0])


class ProtocolTests(Base):
    """Against a scripted milter (a stand-in written for the tests)."""

    async def test_every_stage_in_order_with_its_data(self) -> None:
        milter = ScriptedMilter(self)
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        replies = await smtp.deliver(SENDER, [RCPT], MESSAGE)
        self.assertEqual(replies[-1].code, 250)
        self.assertEqual(milter.commands()[:16], b"OCHMRT" + b"L" * 9 + b"N")
        [connect] = milter.data(b"C")
        self.assertEqual(connect, b"[192.0.2.1]\x004" + struct.pack("!H", 40000) + b"192.0.2.1\x00")
        self.assertEqual(milter.data(b"H"), [b"client.test\x00"])
        self.assertEqual(milter.data(b"M"), [b"<alice@example.org>\x00"])
        self.assertEqual(milter.data(b"R"), [b"<bob@example.com>\x00"])
        headers = milter.data(b"L")
        self.assertTrue(headers[0].startswith(b"Received\x00from [192.0.2.1] (HELO client.test)"))
        self.assertIn(b"X-Folded\x00 two\n\tlines\x00", headers)  # one space eaten, LF kept
        self.assertEqual(milter.data(b"B"), [b"Shall we have lunch?\r\n.leading dot\r\n"])
        macros = b"".join(milter.data(b"D"))
        for pair in (b"{client_addr}\x00192.0.2.1\x00", b"j\x00mx.test\x00",
                     b"{mail_addr}\x00alice@example.org", b"{rcpt_addr}\x00bob@example.com\x00",
                     b"{daemon_name}\x00qptwisted\x00"):
            self.assertIn(pair, macros)
        await smtp.close()
        everything = b"OCHMRT" + b"L" * 9 + b"NBEAQ"
        self.assertEqual(await milter.seen(everything), everything)

    async def test_rset_aborts(self) -> None:
        milter = ScriptedMilter(self)
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        await smtp.send("EHLO client.test", f"MAIL FROM:{SENDER}", "RSET")
        self.assertEqual(await milter.seen(b"OCHMA"), b"OCHMA")

    async def test_accept_at_connect_ends_the_conversation(self) -> None:
        milter = ScriptedMilter(self, {b"C": [milter_packet(b"a")]})
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        replies = await smtp.deliver(SENDER, [RCPT], MESSAGE)
        self.assertEqual(replies[-1].code, 250)
        self.assertEqual(await milter.seen(b"OC"), b"OC")

    async def test_accept_at_rcpt_skips_the_message(self) -> None:
        milter = ScriptedMilter(self, {b"R": [milter_packet(b"a")]})
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 250)
        self.assertEqual(await milter.seen(b"OCHMRA"), b"OCHMRA")

    async def test_reject_at_connect_refuses_the_connection(self) -> None:
        milter = ScriptedMilter(self, {b"C": [milter_packet(b"r")]})
        smtp = self.dialogue(f"milter {milter.address}")
        self.assertEqual(await smtp.start(), [(550, "5.7.1", "Command rejected")])
        self.assertTrue(smtp.smtp.closed)

    async def test_reject_at_helo_refuses_every_later_command(self) -> None:
        milter = ScriptedMilter(self, {b"H": [milter_packet(b"t")]})
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        self.assertEqual(await smtp.send("EHLO client.test"),
                         [(451, "4.7.1", "Service unavailable - try again later")])
        self.assertEqual(await smtp.send("HELO client.test"),
                         [(451, "4.7.1", "Service unavailable - try again later")])

    async def test_replycode_at_rcpt_is_sent_exactly(self) -> None:
        def rcpt(data: bytes) -> list[bytes]:
            if data.startswith(b"<nobody@"):
                return [milter_packet(b"y", b"550 5.1.1 <nobody@example.com>: no such user\x00")]
            return CONTINUE

        milter = ScriptedMilter(self, {b"R": rcpt, b"M": [milter_packet(b"t")]})
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        await smtp.send("EHLO client.test")
        self.assertEqual(await smtp.send(f"MAIL FROM:{SENDER}"),
                         [(451, "4.7.1", "Service unavailable - try again later")])
        milter.answers[b"M"] = CONTINUE
        replies = await smtp.send(f"MAIL FROM:{SENDER}", "RCPT TO:<nobody@example.com>", f"RCPT TO:{RCPT}")
        self.assertEqual(replies[1], (550, "5.1.1", "<nobody@example.com>: no such user"))
        self.assertEqual(replies[2].code, 250)

    async def test_multiline_replycode_at_the_end_of_the_message(self) -> None:
        milter = ScriptedMilter(self, {b"E": [milter_packet(b"y", b"554-5.7.1 Looks like spam\r\n"
                                                                  b"554 5.7.1 See https://example.org/why\x00")]})
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        replies = await smtp.deliver(SENDER, [RCPT], MESSAGE)
        self.assertEqual(replies[-1], (554, "5.7.1", "Looks like spam\nSee https://example.org/why"))
        self.assertEqual(self.capture.messages, [])

    async def test_reject_type_temp_soft_bounces(self) -> None:
        milter = ScriptedMilter(self, {b"E": [milter_packet(b"y", b"554 5.7.1 No thanks\x00")]})
        smtp = self.dialogue(f"milter {milter.address} reject_type temp")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1], (454, "4.7.1", "No thanks"))

    async def test_reject_0_only_logs(self) -> None:
        milter = ScriptedMilter(self, {b"E": [milter_packet(b"r")]})
        smtp = self.dialogue(f"milter {milter.address} reject 0")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 250)
        self.assertEqual(self.capture.notes[0]["milter"]["result"], "reject")

    async def test_discard_answers_250_and_stores_nothing(self) -> None:
        milter = ScriptedMilter(self, {b"E": [milter_packet(b"d")]})
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1], (250, "2.6.0", "Queued"))
        self.assertEqual(self.capture.messages, [])

    async def test_shutdown_answers_421_and_closes(self) -> None:
        milter = ScriptedMilter(self, {b"M": [milter_packet(b"4")]})
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        await smtp.send("EHLO client.test")
        self.assertEqual(await smtp.send(f"MAIL FROM:{SENDER}"),
                         [(421, "4.7.0", "Service unavailable - closing connection")])
        self.assertTrue(smtp.smtp.closed)

    async def test_every_change_at_the_end_of_the_message(self) -> None:
        def changes(data: bytes) -> list[bytes]:
            return [
                milter_packet(b"p"),
                milter_packet(b"h", b"X-Added\x00added value\x00"),
                milter_packet(b"i", struct.pack("!I", 0) + b"X-Top\x00on top\x00"),
                milter_packet(b"m", struct.pack("!I", 1) + b"Subject\x00[tagged] lunch\x00"),
                milter_packet(b"m", struct.pack("!I", 1) + b"X-Remove\x00\x00"),
                milter_packet(b"b", b"New body, line one\r"),
                milter_packet(b"b", b"\nline two\r\n"),
                milter_packet(b"+", b"<carol@example.com>\x00"),
                milter_packet(b"2", b"<dave@example.com>\x00NOTIFY=NEVER\x00"),
                milter_packet(b"-", b"<bob@example.com>\x00"),
                milter_packet(b"e", b"<bounces@example.org>\x00"),
                milter_packet(b"q", b"held for review\x00"),
                milter_packet(b"c"),
            ]

        milter = ScriptedMilter(self, {b"E": changes})
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 250)
        [stored] = self.capture.messages
        header, _, body = stored.partition(b"\n\n")
        self.assertTrue(header.startswith(b"X-Top: on top\nReceived: "))
        self.assertIn(b"\nSubject: [tagged] lunch\n", header + b"\n")
        self.assertNotIn(b"X-Remove", header)
        self.assertTrue(header.endswith(b"\nX-Added: added value"))
        self.assertEqual(body, b"New body, line one\nline two\n")
        self.assertEqual(self.capture.envelopes, [("<bounces@example.org>",
                                                   ["<carol@example.com>", "<dave@example.com>"])])
        notes = self.capture.notes[0]
        self.assertEqual(notes["quarantine"], "milter: held for review")
        self.assertEqual(notes["milter"]["changes"], ["add", "insert", "change", "add_recipient",
                                                      "delete_recipient", "change_sender", "replace_body",
                                                      "quarantine"])

    async def test_skip_stops_the_body_and_chunks_stay_under_64k(self) -> None:
        milter = ScriptedMilter(self)
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        body = (b"x" * 99 + b"\n") * 2000  # 200,000 bytes stored, 202,000 with CRLF
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], b"Subject: big\n\n" + body))[-1].code, 250)
        chunks = milter.data(b"B")
        self.assertEqual(b"".join(chunks), body.replace(b"\n", b"\r\n"))
        self.assertTrue(all(len(chunk) <= 65535 for chunk in chunks))
        milter.received.clear()
        milter.answers[b"B"] = [milter_packet(b"s")]
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], b"Subject: big\n\n" + body))[-1].code, 250)
        self.assertEqual(len(milter.data(b"B")), 1)
        self.assertEqual(milter.commands()[-3:], b"BEA")

    async def test_large_message_skips_the_milter_with_an_abort(self) -> None:
        milter = ScriptedMilter(self)
        smtp = self.dialogue(f"milter {milter.address} max_size 100")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 250)
        self.assertEqual(await milter.seen(b"OCHMRTA"), b"OCHMRTA")
        self.assertEqual(self.capture.notes[0]["milter"]["result"], "skipped")

    async def test_version_2_milter_gets_no_data_event(self) -> None:
        milter = ScriptedMilter(self, version=2)
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 250)
        self.assertNotIn(b"T", milter.commands())
        self.assertEqual(milter.commands()[:5], b"OCHMR")

    async def test_steps_the_milter_declines_or_does_not_answer(self) -> None:
        # no headers at all, no reply to body chunks, no connect event
        milter = ScriptedMilter(self, steps=0x20 | 0x80000 | 0x01)
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 250)
        self.assertEqual(await milter.seen(b"OHMRTNBEA"), b"OHMRTNBEA")

    async def test_two_milters_in_a_chain_see_each_others_changes(self) -> None:
        first = ScriptedMilter(self, {b"E": [milter_packet(b"h", b"X-First\x00one\x00"), *CONTINUE]})
        second = ScriptedMilter(self, {b"E": [milter_packet(b"h", b"X-Second\x00two\x00"), *CONTINUE]})
        smtp = self.dialogue(f"milter {first.address}", f"milter:2 {second.address}")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 250)
        self.assertIn(b"X-First\x00one\x00", second.data(b"L"))
        header = self.capture.messages[0].partition(b"\n\n")[0]
        self.assertTrue(header.endswith(b"X-First: one\nX-Second: two"))


class FailureTests(Base):
    """A milter that is down, closes, answers garbage or nothing: on_error decides."""

    async def test_down_at_connect_defers_the_connection(self) -> None:
        smtp = self.dialogue(f"milter 127.0.0.1:{free_port()}")
        [greeting] = await smtp.start()
        self.assertEqual(greeting, (451, "4.7.1", "Message cannot be checked now (milter unavailable), "
                                                  "try again later"))
        self.assertTrue(smtp.smtp.closed)

    async def test_down_with_accept_delivers_marked_mail(self) -> None:
        smtp = self.dialogue(f"milter 127.0.0.1:{free_port()} on_error accept")
        self.assertEqual((await smtp.start())[0].code, 220)
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 250)
        self.assertRegex(self.capture.messages[0].decode(),
                         r"\nX-Not-Scanned: milter on mx\.test: cannot connect to 127\.0\.0\.1:\d+: "
                         r".* \(at connect\)\n")

    async def test_milter_closes_at_mail(self) -> None:
        milter = ScriptedMilter(self, {b"M": "close"})
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        await smtp.send("EHLO client.test")
        deferred = (451, "4.7.1", "Message cannot be checked now (milter unavailable), try again later")
        self.assertEqual(await smtp.send(f"MAIL FROM:{SENDER}"), [deferred])
        self.assertEqual(await smtp.send(f"MAIL FROM:{SENDER}"), [deferred])  # the rest of the connection

    async def test_garbage_at_the_end_of_the_message(self) -> None:
        milter = ScriptedMilter(self, {b"E": "garbage"})
        smtp = self.dialogue(f"milter {milter.address}")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 451)
        self.assertEqual(self.capture.messages, [])

    async def test_silent_milter_times_out(self) -> None:
        milter = ScriptedMilter(self, {b"R": "silent"})
        smtp = self.dialogue(f"milter {milter.address} timeout 1 on_error accept")
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 250)
        self.assertIn(b"milter: no answer within 1s (at rcpt)", self.capture.messages[0])

    async def test_replacement_body_larger_than_databytes_is_refused(self) -> None:
        milter = ScriptedMilter(self, {b"E": [milter_packet(b"b", b"x" * 60000)] * 3 + CONTINUE})
        engine = make_engine([f"milter {milter.address}", "rcpt_ok", Capture],
                             config={"rcpthosts": "example.com", "databytes": "100000"}, clock=reactor)
        self.addCleanup(engine.close)
        smtp = AsyncDialogue(engine)
        self.addCleanup(smtp.close)
        await smtp.start()
        self.assertEqual((await smtp.deliver(SENDER, [RCPT], MESSAGE))[-1].code, 451)
        self.assertEqual(list(Path(engine.settings.spool_dir).glob("qptmsg.*")), [])

    async def test_unknown_reply_is_a_protocol_error(self) -> None:
        milter = ScriptedMilter(self, {b"M": [milter_packet(b"h", b"X-Early\x00no\x00")]})
        smtp = self.dialogue(f"milter {milter.address} on_error reject")
        await smtp.start()
        await smtp.send("EHLO client.test")
        self.assertEqual(await smtp.send(f"MAIL FROM:{SENDER}"),
                         [(554, "5.7.0", "Message cannot be checked (milter unavailable)")])

    async def test_milter_asking_for_unknown_actions_is_refused(self) -> None:
        milter = ScriptedMilter(self, actions=0x1000)
        smtp = self.dialogue(f"milter {milter.address}")
        self.assertEqual((await smtp.start())[0].code, 451)
