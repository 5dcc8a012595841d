"""BDAT / CHUNKING and BINARYMIME (RFC 3030) at the protocol level: every path, every error.

Each test is named after the RFC 3030 rule (or the engine rule) it pins.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from qptwisted import DECLINED, DENY_DISCONNECT, DENYSOFT, OK, HookAnswer, Plugin, Transaction
from qptwisted.testing import make_engine

from .core_support import CaptureQueue, Dialogue

MESSAGE = b"Subject: chunks\r\nFrom: a@sender.test\r\n\r\nfirst line\r\n.\r\n..two dots\r\nlast\r\n"
STORED = b"Subject: chunks\nFrom: a@sender.test\n\nfirst line\n.\n..two dots\nlast\n"


def bdat(data: bytes, size: int | None = None) -> list[bytes]:
    """``data`` as BDAT commands with their chunks (``size`` octets each; the last says LAST)."""
    size = size or max(len(data), 1)
    pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    return [f"BDAT {len(piece)}{' LAST' if n == len(pieces) - 1 else ''}\r\n".encode() + piece
            for n, piece in enumerate(pieces)]


class Counter(Plugin):
    """Counts the data hooks; answers ``data`` as told; may hold data_headers_end."""

    name = "test_bdat_counter"

    def register(self, *args: str) -> None:
        self.calls: list[str] = []
        self.data_answer: Any = DECLINED
        self.headers_end: Deferred[Any] | None = None

    def hook_data(self, transaction: Transaction) -> HookAnswer:
        self.calls.append("data")
        return self.data_answer

    def hook_data_headers_end(self, transaction: Transaction) -> HookAnswer:
        self.calls.append("data_headers_end")
        return self.headers_end

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        self.calls.append(f"data_post {transaction.data_size}")
        return DECLINED

    def hook_rcpt(self, transaction: Transaction, rcpt: Any, **params: Any) -> HookAnswer:
        return OK


class Base(unittest.SynchronousTestCase):
    def dialogue(self, config: dict[str, Any] | None = None) -> Dialogue:
        self.engine = make_engine([Counter, CaptureQueue], config=config)
        counter, queue = self.engine.plugins
        assert isinstance(counter, Counter) and isinstance(queue, CaptureQueue)
        self.counter, self.queue = counter, queue
        d = Dialogue(self.engine)
        self.addCleanup(d.close)
        d.send("EHLO client.test")
        return d

    def envelope(self, d: Dialogue, body: str = "") -> None:
        replies = d.send(f"MAIL FROM:<a@sender.test>{body}", "RCPT TO:<b@example.com>")
        self.assertEqual([r[0] for r in replies], [250, 250])

    def codes(self, replies: list[Any]) -> list[int]:
        return [reply[0] for reply in replies]


class ChunkingTests(Base):
    def test_rfc3030_chunking_and_binarymime_advertised(self) -> None:
        engine = make_engine([CaptureQueue])
        d = Dialogue(engine)
        self.addCleanup(d.close)
        [(_, _, text)] = d.send("EHLO client.test")
        self.assertIn("CHUNKING", text.split("\n"))
        self.assertIn("BINARYMIME", text.split("\n"))

    def test_binarymime_not_offered_when_switched_off(self) -> None:
        d = self.dialogue({"binarymime": "0"})
        [(_, _, text)] = d.send("EHLO client.test")
        self.assertNotIn("BINARYMIME", text.split("\n"))
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> BODY=BINARYMIME")[0][:2], (501, "5.5.4"))

    def test_rfc3030_single_last_chunk_is_queued_like_data(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        [reply] = d.send_raw(bdat(MESSAGE)[0])
        self.assertEqual(reply[:2], (250, "2.6.0"))
        header, body = self.queue.messages[0].split(b"\n\n", 1)
        self.assertIn(b"Received: from", header)
        self.assertTrue(header.endswith(b"Subject: chunks\nFrom: a@sender.test"))
        self.assertEqual(body, b"first line\n.\n..two dots\nlast\n")

    def test_bdat_and_data_store_the_same_message(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        d.send_raw(b"".join(bdat(MESSAGE, 7)))
        self.envelope(d)
        self.assertEqual(d.send("DATA")[0][0], 354)
        self.assertEqual(d.message(STORED)[0][0], 250)
        first, second = (message.split(b"\n", 3)[-1] for message in self.queue.messages)
        self.assertEqual(first, second)

    def test_rfc3030_pipelined_chunks_get_one_reply_each(self) -> None:
        d = self.dialogue()
        replies = d.send_raw(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.com>\r\n"
                             + b"".join(bdat(MESSAGE, 20)) + b"NOOP\r\n")
        chunks = len(bdat(MESSAGE, 20))
        self.assertEqual(self.codes(replies), [250, 250] + [250] * chunks + [250])
        self.assertEqual(replies[2], (250, "2.0.0", "20 octets received"))
        self.assertEqual(replies[-2][:2], (250, "2.6.0"))
        self.assertEqual(self.queue.messages[0].split(b"\n\n", 1)[1], STORED.split(b"\n\n", 1)[1])

    def test_hooks_run_once_data_before_the_first_chunk_data_post_after_last(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        d.send_raw(b"".join(bdat(MESSAGE, 9)))
        self.assertEqual(self.counter.calls, ["data", "data_headers_end", f"data_post {len(MESSAGE)}"])

    def test_chunks_arriving_byte_by_byte_keep_crlf_split_across_chunks(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        wire = b"".join(bdat(MESSAGE, 16))  # chunk boundaries fall inside CRLF pairs
        replies: list[Any] = []
        for byte in wire:
            replies += d.send_raw(bytes([byte]))
        self.assertEqual(self.codes(replies), [250] * len(bdat(MESSAGE, 16)))
        self.assertEqual(replies[-1][:2], (250, "2.6.0"))
        self.assertEqual(self.queue.messages[0].split(b"\n\n", 1)[1], STORED.split(b"\n\n", 1)[1])

    def test_rfc3030_no_dot_handling_no_line_limit_bare_cr_lf_are_data(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        long_line = b"x" * 5000
        body = b"Subject: raw\r\n\r\n.\r\n" + long_line + b"\r\nbare\nlf and bare\rcr\r\n.\r\n"
        self.assertEqual(d.send_raw(bdat(body)[0])[0][:2], (250, "2.6.0"))
        self.assertEqual(self.queue.messages[0].split(b"\n\n", 1)[1],
                         b".\n" + long_line + b"\nbare\nlf and bare\rcr\n.\n")

    def test_a_cr_ending_the_last_chunk_is_kept(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        d.send_raw(b"BDAT 14\r\nSubject: x\r\n\r\nBDAT 3 LAST\r\nab\r")
        self.assertTrue(self.queue.messages[0].endswith(b"\nab\r"))

    def test_rfc3030_bdat_0_last_ends_the_message(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        replies = d.send_raw(b"BDAT 20\r\nSubject: x\r\n\r\nbody\r\nBDAT 0 LAST\r\n")
        self.assertEqual([r[:2] for r in replies], [(250, "2.0.0"), (250, "2.6.0")])
        self.assertTrue(self.queue.messages[0].endswith(b"Subject: x\n\nbody\n"))

    def test_bdat_0_last_alone_is_an_empty_message(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        self.assertEqual(d.send("BDAT 0 LAST")[0][:2], (250, "2.6.0"))

    def test_commands_inside_a_chunk_are_not_run(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        replies = d.send_raw(b"BDAT 6\r\nQUIT\r\nBDAT 0 LAST\r\n")
        self.assertEqual(self.codes(replies), [250, 250])
        self.assertFalse(d.closed)
        self.assertTrue(self.queue.messages[0].endswith(b"QUIT\n"))

    def test_large_body_goes_to_the_spool_file_as_with_data(self) -> None:
        d = self.dialogue({"size_threshold": "1000"})
        self.envelope(d)
        body = b"Subject: big\r\n\r\n" + b"y" * 76 + b"\r\n"
        d.send_raw(b"".join(bdat(body * 100, 4096)))
        self.assertEqual(len(self.queue.messages), 1)
        self.assertEqual(self.queue.messages[0].count(b"y" * 76), 100)

    def test_spool_goes_to_disk_during_the_sequence(self) -> None:
        d = self.dialogue({"size_threshold": "1000"})
        self.envelope(d)
        d.send_raw(b"BDAT 5000\r\nSubject: big\r\n\r\n" + b"z" * (5000 - 16))
        spool = d.session.transaction.body
        self.assertIsNotNone(spool.filename)


class ErrorTests(Base):
    def test_rfc3030_data_after_bdat_is_503(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        d.send_raw(b"BDAT 12\r\nSubject: x\r\n")
        self.assertEqual(d.send("DATA")[0][:2], (503, "5.5.1"))
        self.assertEqual(d.send("BDAT 0 LAST")[0][:2], (250, "2.6.0"))

    def test_rfc3030_binarymime_with_data_is_503(self) -> None:
        d = self.dialogue()
        self.envelope(d, " BODY=BINARYMIME")
        self.assertEqual(d.send("DATA")[0][:2], (503, "5.5.1"))
        self.assertEqual(self.counter.calls, [])

    def test_rfc3030_bdat_without_mail_reads_and_drops_the_chunk(self) -> None:
        d = self.dialogue()
        replies = d.send_raw(b"BDAT 6\r\nNOOP\r\nRSET\r\n")
        self.assertEqual(replies, [(503, "5.5.1", "MAIL first"), (250, "2.0.0", "OK")])

    def test_rfc3030_bdat_without_recipients_drops_the_chunk_and_the_pipelined_ones(self) -> None:
        d = self.dialogue()
        d.send("MAIL FROM:<a@sender.test>")
        replies = d.send_raw(b"BDAT 6\r\nQUIT\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
        self.assertEqual([r[:2] for r in replies], [(503, "5.5.1"), (503, "5.5.1"), (250, "2.0.0")])
        self.assertIn("discarded", replies[1][2])
        self.assertFalse(d.closed)
        self.assertEqual(self.counter.calls, [])

    def test_rfc3030_refused_data_hook_drops_the_rest_with_the_same_code(self) -> None:
        d = self.dialogue()
        self.counter.data_answer = (DENYSOFT, "not now")
        self.envelope(d)
        replies = d.send_raw(b"".join(bdat(MESSAGE, 20)))
        self.assertEqual(replies[0], (451, "4.7.1", "not now"))
        self.assertEqual(self.codes(replies), [451] * len(bdat(MESSAGE, 20)))
        self.assertEqual(self.queue.messages, [])
        # after the LAST chunk the sequence is over: a new transaction works
        self.counter.data_answer = DECLINED
        self.envelope(d)
        self.assertEqual(d.send_raw(bdat(MESSAGE)[0])[0][:2], (250, "2.6.0"))

    def test_data_hook_disconnect_closes_at_once(self) -> None:
        d = self.dialogue()
        self.counter.data_answer = DENY_DISCONNECT
        self.envelope(d)
        self.assertEqual(d.send_raw(b"BDAT 100\r\nSubject")[0][:2], (554, "5.7.1"))
        self.assertTrue(d.closed)

    def test_chunk_past_databytes_is_refused_without_being_kept(self) -> None:
        d = self.dialogue({"databytes": "100", "size_threshold": "1000000"})
        self.envelope(d)
        self.assertEqual(d.send_raw(b"BDAT 50\r\nSubject: x\r\n\r\n" + b"a" * 36)[0][:2], (250, "2.0.0"))
        # announced past the limit: refused before a byte of it is kept, and read in pieces
        self.assertEqual(d.send_raw(b"BDAT 1000000\r\n"), [])
        self.assertIsNone(d.session.receiver)
        for _ in range(100):
            self.assertEqual(d.send_raw(b"b" * 9999), [])
        self.assertEqual(d.send_raw(b"b" * 100)[0][:2], (552, "5.3.4"))
        self.assertIsNone(d.session.transaction.body)
        # the pipelined rest of the sequence is dropped with the same code
        self.assertEqual(d.send_raw(b"BDAT 3 LAST\r\nabc")[0][:2], (552, "5.3.4"))
        self.assertEqual(self.queue.messages, [])
        self.envelope(d)
        self.assertEqual(d.send_raw(bdat(b"Subject: small\r\n\r\nok\r\n")[0])[0][:2], (250, "2.6.0"))

    def test_chunks_exactly_filling_databytes_are_accepted(self) -> None:
        d = self.dialogue({"databytes": "40"})
        self.envelope(d)
        replies = d.send_raw(b"".join(bdat(b"Subject: x\r\n\r\n" + b"c" * 26, 10)))
        self.assertEqual(replies[-1][:2], (250, "2.6.0"))

    def test_rfc3030_unreadable_size_is_501_and_closes(self) -> None:
        for bad in ("BDAT", "BDAT x", "BDAT -1", "BDAT 5 NEXT", "BDAT 1 LAST more",
                    "BDAT 9999999999999999999"):
            d = self.dialogue()
            self.envelope(d)
            self.assertEqual(d.send(bad)[0][:2], (501, "5.5.4"), bad)
            self.assertTrue(d.closed, bad)

    def test_last_is_case_insensitive(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        self.assertEqual(d.send_raw(b"BDAT 12 last\r\nSubject: x\r\n")[0][:2], (250, "2.6.0"))

    def test_rset_in_the_middle_drops_the_sequence(self) -> None:
        d = self.dialogue()
        self.envelope(d)
        d.send_raw(b"BDAT 12\r\nSubject: x\r\n")
        self.assertEqual(d.send("RSET")[0][0], 250)
        self.assertIsNone(d.session.receiver)
        self.assertEqual(d.send("BDAT 0 LAST")[0][:2], (503, "5.5.1"))

    def test_disconnect_inside_a_chunk_drops_the_spool(self) -> None:
        d = self.dialogue({"size_threshold": "10"})
        self.envelope(d)
        d.send_raw(b"BDAT 1000\r\nSubject: x\r\n\r\n" + b"q" * 100)
        spool = d.session.transaction.body
        filename = spool.filename
        self.assertIsNotNone(filename)
        d.close()
        import os

        self.assertFalse(os.path.exists(filename))

    def test_header_too_large_refused_after_its_chunk(self) -> None:
        d = self.dialogue({"max_header_size": "100"})
        self.envelope(d)
        replies = d.send_raw(b"BDAT 300\r\n" + b"X-Long: " + b"h" * 290 + b"\r\n" + b"BDAT 2 LAST\r\nok")
        self.assertEqual([r[:2] for r in replies], [(552, "5.3.4"), (552, "5.3.4")])

    def test_async_data_headers_end_holds_the_next_chunk(self) -> None:
        d = self.dialogue()
        waiting: Deferred[Any] = Deferred()
        self.counter.headers_end = waiting
        self.envelope(d)
        replies = d.send_raw(b"BDAT 14\r\nSubject: x\r\n\r\nBDAT 4 LAST\r\nbody")
        self.assertEqual(replies, [])
        waiting.callback(DECLINED)
        self.assertEqual([r[:2] for r in d.replies()], [(250, "2.0.0"), (250, "2.6.0")])
        self.assertTrue(self.queue.messages[0].endswith(b"Subject: x\n\nbody"))


class BinaryMimeTests(Base):
    def test_rfc3030_binary_body_is_kept_octet_for_octet(self) -> None:
        d = self.dialogue()
        self.envelope(d, " BODY=BINARYMIME")
        self.assertEqual(d.session.transaction.body_type, "BINARYMIME")
        body = bytes(range(256)) * 4 + b"\r\n\n\r.\r\n"
        message = b"Subject: binary\r\nContent-Type: application/octet-stream\r\n\r\n" + body
        self.assertEqual(d.send_raw(b"".join(bdat(message, 100)))[-1][:2], (250, "2.6.0"))
        header, stored = self.queue.messages[0].split(b"\n\n", 1)
        self.assertTrue(header.endswith(b"Subject: binary\nContent-Type: application/octet-stream"))
        self.assertEqual(stored, body)

    def test_binary_header_ending_in_a_later_chunk(self) -> None:
        d = self.dialogue()
        self.envelope(d, " BODY=BINARYMIME")
        replies = d.send_raw(b"BDAT 11\r\nSubject: b\rBDAT 4\r\n\n\r\n\x00BDAT 1 LAST\r\n\n")
        self.assertEqual([r[:2] for r in replies], [(250, "2.0.0"), (250, "2.0.0"), (250, "2.6.0")])
        self.assertTrue(self.queue.messages[0].endswith(b"Subject: b\n\n\x00\n"))
