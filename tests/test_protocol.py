"""The wire: pipelining, DATA framing, line limits, sizes, timeouts, disconnects.

Everything runs on in-memory transports with the engine's ``Clock``. Edge
cases are named after the RFC rule or CVE they guard.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import DENY, DENY_DISCONNECT, OK, Address, HookAnswer, Plugin, Transaction
from qptwisted.testing import make_engine

from .core_support import CaptureQueue, Dialogue


class Relay(Plugin):
    """rcpt: OK for example.com, 550 elsewhere; mail/connect answers delayed by ``delay`` seconds."""

    name = "test_relay"

    def register(self, *args: str) -> None:
        self.delay = 0.0
        self.seen: list[str] = []

    def later(self, answer: Any) -> Any:
        if not self.delay:
            return answer
        pending: Deferred[Any] = Deferred()
        self.clock.callLater(self.delay, pending.callback, answer)
        return pending

    def hook_mail(self, transaction: Transaction, sender: Address, **params: Any) -> HookAnswer:
        self.seen.append(f"mail {sender}")
        return self.later(None)

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        self.seen.append(f"rcpt {rcpt}")
        if rcpt.host.lower() == "example.com":
            return self.later(OK)
        return self.later((DENY, "Relaying denied (#5.7.1)"))

    def hook_disconnect(self, transaction: Transaction) -> None:
        self.seen.append("disconnect")

    def hook_post_connection(self, transaction: Transaction) -> None:
        self.seen.append("post_connection")


class SlowConnect(Plugin):
    """connect answers after 3 seconds."""

    name = "test_slow_connect"

    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        pending: Deferred[Any] = Deferred()
        self.clock.callLater(3, pending.callback, None)
        return pending


class Base(unittest.SynchronousTestCase):
    relay: Relay
    queue: CaptureQueue

    def setUp(self) -> None:
        self.clock = Clock()
        self.spool = Path(self.mktemp())

    def dialogue(self, config: dict[str, str] | None = None, *extra: type[Plugin]) -> Dialogue:
        settings = {"spool_dir": str(self.spool)}
        settings.update(config or {})
        self.engine = make_engine([Relay, *extra, CaptureQueue], config=settings, clock=self.clock)
        relay, queue = self.engine.plugins[0], self.engine.plugins[-1]
        assert isinstance(relay, Relay)
        assert isinstance(queue, CaptureQueue)
        self.relay, self.queue = relay, queue
        d = Dialogue(self.engine)
        self.addCleanup(d.close)
        return d

    def open_data(self, d: Dialogue) -> None:
        replies = d.send("EHLO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>", "DATA")
        self.assertEqual([r[0] for r in replies], [250, 250, 250, 354])

    def codes(self, replies: list[Any]) -> list[int]:
        return [r[0] for r in replies]

    def stored_body(self) -> bytes:
        """The body of the single stored message (after our Received/A-R headers)."""
        self.assertEqual(len(self.queue.messages), 1)
        return self.queue.messages[0]


class PipeliningTests(Base):
    def test_rfc2920_batch_answered_in_order(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        replies = d.send("MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>",
                         "RCPT TO:<x@elsewhere.test>", "DATA")
        self.assertEqual([(r[0], r[1]) for r in replies],
                         [(250, "2.1.0"), (250, "2.1.5"), (550, "5.7.1"), (354, None)])
        self.assertEqual(replies[2][2], "Relaying denied (#5.7.1)")
        self.assertEqual(self.codes(d.message("Subject: x\n\nhello\n")), [250])

    def test_a_client_that_shuts_its_sending_side_still_gets_every_reply(self) -> None:
        # Exim pipelines QUIT after the last BDAT chunk and may shut down its side: answer, then close
        d = self.dialogue()
        d.send("EHLO client.test")
        self.relay.delay = 1
        self.assertEqual(d.send("MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>", "QUIT"), [])
        d.protocol.readConnectionLost()
        self.assertFalse(d.closed)
        self.clock.pump([1, 1])  # the MAIL and the RCPT hook each take a second
        self.assertEqual(self.codes(d.replies()), [250, 250, 221])
        self.assertTrue(d.closed)

    def test_rfc2920_batch_with_asynchronous_hooks_answered_in_order(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        self.relay.delay = 1
        replies = d.send("MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>",
                         "RCPT TO:<x@elsewhere.test>", "DATA")
        self.assertEqual(replies, [])
        # the rest of the batch waits in the buffer; the socket is read on until a line's worth waits
        self.assertEqual(d.transport.producerState, "producing")
        self.assertEqual(self.relay.seen, ["mail <a@sender.test>"])
        self.clock.advance(1)
        self.assertEqual(self.codes(d.replies()), [250])
        d.send_raw(b"NOOP\r\n" * 100)
        self.assertEqual(d.transport.producerState, "paused")
        self.clock.advance(1)
        self.assertEqual(self.codes(d.replies()), [250])
        self.clock.advance(1)
        self.assertEqual(self.codes(d.replies()), [550, 354])
        self.assertEqual(d.transport.producerState, "producing")
        self.assertEqual(self.relay.seen, ["mail <a@sender.test>", "rcpt <b@example.com>",
                                           "rcpt <x@elsewhere.test>"])
        self.assertEqual(self.codes(d.message("Subject: x\n\nhello\n")), [250])

    def test_input_during_a_hook_waits(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        self.relay.delay = 5
        self.assertEqual(d.send("MAIL FROM:<a@sender.test>"), [])
        self.assertEqual(d.send("NOOP"), [])
        self.assertEqual(d.send("RCPT TO:<b@example.com>"), [])
        self.clock.advance(5)
        self.assertEqual(self.codes(d.replies()), [250, 250])
        self.clock.advance(5)
        self.assertEqual(self.codes(d.replies()), [250])

    def test_greeting_only_after_the_connect_chain(self) -> None:
        d = self.dialogue(None, SlowConnect)
        self.assertEqual(d.greeting, [])
        # before the greeting the server keeps reading (to see early talkers), but acts on nothing
        self.assertEqual(d.transport.producerState, "producing")
        self.assertFalse(d.session.connection.early_talker)
        # an early talker's command waits for the greeting
        self.assertEqual(d.send("EHLO client.test"), [])
        self.assertTrue(d.session.connection.early_talker)
        # and a flood before the greeting is not read into memory
        d.send_raw(b"X" * 1000)
        self.assertEqual(d.transport.producerState, "paused")
        self.clock.advance(2.9)
        self.assertEqual(d.replies(), [])
        self.clock.advance(0.1)
        replies = d.replies()
        self.assertEqual(self.codes(replies), [220, 250])


class SmugglingTests(Base):
    """CVE-2023-51764 / 51765 / 51766: only <CRLF>.<CRLF> ends DATA."""

    INJECTED = b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n"

    def smuggle(self, terminator: bytes) -> None:
        d = self.dialogue()
        self.open_data(d)
        payload = b"Subject: smuggling\r\n\r\nreal body" + terminator + self.INJECTED + b".\r\n"
        replies = d.send_raw(payload)
        self.assertEqual(replies, [(550, "5.6.0", replies[0][2] if replies else "")],
                         f"terminator {terminator!r}")
        self.assertEqual(self.relay.seen, ["mail <a@sender.test>", "rcpt <b@example.com>"],
                         f"terminator {terminator!r}: injected command executed")
        self.assertEqual(self.queue.messages, [])
        self.assertIsNone(d.session.transaction.sender)
        self.assertFalse(d.closed)
        self.assertEqual(self.codes(d.send("MAIL FROM:<a@sender.test>")), [250])

    def test_cve_2023_51764_lf_dot_lf(self) -> None:
        self.smuggle(b"\n.\n")

    def test_cve_2023_51764_lf_dot_crlf(self) -> None:
        self.smuggle(b"\n.\r\n")

    def test_cve_2023_51765_cr_dot_cr(self) -> None:
        self.smuggle(b"\r.\r")

    def test_cve_2023_51766_crlf_dot_lf(self) -> None:
        self.smuggle(b"\r\n.\n")

    def test_cve_2023_51766_crlf_dot_cr(self) -> None:
        self.smuggle(b"\r\n.\r")

    def test_cr_dot_crlf(self) -> None:
        self.smuggle(b"\r.\r\n")

    def test_lf_dot_crlf_qpsmtpd_issue_317(self) -> None:
        # qpsmtpd split DATA on \n, so "\n.\r\n" ended the message and the MAIL FROM ran
        self.smuggle(b"\r\n\n.\r\n")

    def test_rfc5321_2_3_8_bare_lf_in_body_refused(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        replies = d.send_raw(b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n")
        self.assertEqual([(r[0], r[1]) for r in replies], [(550, "5.6.0")])


class FramingTests(Base):
    MESSAGE = b"Subject: split\r\n\r\nline one\r\n..dotted\r\n.\r\nNOOP\r\n"

    def test_rfc5321_4_1_1_4_terminator_split_at_every_byte(self) -> None:
        start = self.MESSAGE.index(b"line one")
        for cut in range(start, len(self.MESSAGE)):
            d = self.dialogue()
            self.open_data(d)
            first = d.send_raw(self.MESSAGE[:cut])
            second = d.send_raw(self.MESSAGE[cut:])
            self.assertEqual(self.codes(first + second), [250, 250], f"cut at {cut}")
            self.assertTrue(self.queue.messages[0].endswith(b"\nline one\n.dotted\n"), f"cut at {cut}")
            d.close()

    def test_rfc5321_4_1_1_4_message_one_byte_per_packet(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        replies: list[Any] = []
        for index in range(len(self.MESSAGE)):
            replies += d.send_raw(self.MESSAGE[index:index + 1])
        self.assertEqual(self.codes(replies), [250, 250])
        self.assertTrue(self.stored_body().endswith(b"Subject: split\n\nline one\n.dotted\n"))

    def test_rfc5321_4_5_2_dot_unstuffing(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        d.send_raw(b"Subject: dots\r\n\r\n..x\r\n...\r\n.. \r\nmiddle..dots\r\n.\r\n")
        self.assertTrue(self.stored_body().endswith(b"\n\n.x\n..\n. \nmiddle..dots\n"))

    def test_rfc5321_4_5_2_dot_unstuffing_in_first_line(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        self.assertEqual(self.codes(d.send_raw(b"..first\r\n.\r\n")), [250])
        self.assertTrue(self.stored_body().endswith(b"\n.first\n"), self.stored_body())

    def test_message_that_is_only_a_dot_line(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        self.assertEqual(self.codes(d.send_raw(b"..\r\n.\r\n")), [250])
        self.assertTrue(self.stored_body().endswith(b"\n.\n"), self.stored_body())

    def test_empty_message(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        self.assertEqual(self.codes(d.send_raw(b".\r\n")), [250])
        self.assertIn(b"Received: ", self.stored_body())

    def test_message_without_header_separator_keeps_its_lines(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        d.message("no headers at all, just a body line\nsecond line\n")
        stored = self.stored_body()
        self.assertIn(b"no headers at all, just a body line\nsecond line\n", stored)

    def test_header_without_body_kept(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        d.message("Subject: only a header\n")
        self.assertIn(b"Subject: only a header\n", self.stored_body())

    def test_stored_message_has_lf_line_endings(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        d.send_raw(b"Subject: crlf\r\n\r\none\r\ntwo\r\n.\r\n")
        self.assertNotIn(b"\r", self.stored_body())


class LimitTests(Base):
    def test_rfc5321_4_5_3_1_4_command_line_of_512_octets_accepted(self) -> None:
        d = self.dialogue()
        line = b"NOOP " + b"x" * (512 - 5 - 2) + b"\r\n"
        self.assertEqual(len(line), 512)
        self.assertEqual(self.codes(d.send_raw(line)), [250])

    def test_rfc5321_4_5_3_1_4_command_line_too_long(self) -> None:
        d = self.dialogue()
        line = b"NOOP " + b"x" * (512 - 5 - 1) + b"\r\n"
        self.assertEqual([(r[0], r[1]) for r in d.send_raw(line)], [(500, "5.5.2")])
        self.assertEqual(self.codes(d.send("NOOP")), [250])
        self.assertFalse(d.closed)

    def test_max_command_length_is_configurable(self) -> None:
        d = self.dialogue({"max_command_length": "100"})
        self.assertEqual(self.codes(d.send("NOOP " + "x" * 80)), [250])
        self.assertEqual([(r[0], r[1]) for r in d.send("NOOP " + "x" * 150)], [(500, "5.5.2")])
        self.assertEqual(self.codes(d.send("EHLO client.test")), [250])

    def test_long_command_line_in_small_packets_without_newline(self) -> None:
        d = self.dialogue()
        replies: list[Any] = []
        for _ in range(200):
            replies += d.send_raw(b"y" * 50)
            self.assertLessEqual(len(d.protocol._buffer), 512 + 50)
        replies += d.send_raw(b"\r\n")
        self.assertEqual([(r[0], r[1]) for r in replies], [(500, "5.5.2")])
        self.assertEqual(self.codes(d.send("NOOP")), [250])

    def test_long_command_followed_by_pipelined_commands(self) -> None:
        d = self.dialogue()
        replies = d.send_raw(b"Z" * 2000 + b"\r\nNOOP\r\nNOOP\r\n")
        self.assertEqual(self.codes(replies), [500, 250, 250])

    def test_rfc5321_4_5_3_1_6_data_line_too_long_refused_after_end_of_data(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        self.assertEqual(d.send_raw(b"Subject: long\r\n\r\n" + b"a" * 999 + b"\r\n"), [])
        replies = d.send_raw(b"after\r\n.\r\n")
        self.assertEqual([(r[0], r[1]) for r in replies], [(500, "5.5.2")])
        self.assertEqual(self.queue.messages, [])
        self.assertEqual(self.codes(d.send("NOOP")), [250])

    def test_rfc5321_4_5_3_1_6_data_line_of_1000_octets_accepted(self) -> None:
        d = self.dialogue()
        self.open_data(d)
        replies = d.send_raw(b"Subject: long\r\n\r\n" + b"a" * 998 + b"\r\n.\r\n")
        self.assertEqual(self.codes(replies), [250])
        self.assertIn(b"a" * 998 + b"\n", self.stored_body())

    def test_rfc5321_4_5_3_1_6_dot_stuffed_998_octet_line_accepted(self) -> None:
        # the limit does not count the dot added for transparency: 999 octets on the wire, 998 stored
        d = self.dialogue()
        self.open_data(d)
        line = b"." + b"a" * 997
        replies = d.send_raw(b"Subject: dots\r\n\r\n." + line + b"\r\n.\r\n")
        self.assertEqual(self.codes(replies), [250])
        self.assertIn(b"\n" + line + b"\n", self.stored_body())
        # one more octet is too long, stuffed or not
        self.assertEqual(self.codes(d.send("MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>", "DATA")),
                         [250, 250, 354])
        replies = d.send_raw(b"Subject: dots\r\n\r\n.." + b"a" * 998 + b"\r\n.\r\n")
        self.assertEqual([(r[0], r[1]) for r in replies], [(500, "5.5.2")])

    def test_long_data_line_in_small_packets(self) -> None:
        d = self.dialogue({"max_line_length": "100"})
        self.open_data(d)
        replies: list[Any] = d.send_raw(b"Subject: long\r\n\r\n")
        for _ in range(100):
            replies += d.send_raw(b"b" * 30)
        replies += d.send_raw(b"\r\nshort\r\n.\r\n")
        self.assertEqual([(r[0], r[1]) for r in replies], [(500, "5.5.2")])
        self.assertEqual(self.codes(d.send("RSET")), [250])

    def test_rfc1870_databytes_message_too_big_after_whole_message(self) -> None:
        d = self.dialogue({"databytes": "200"})
        ehlo = d.send("EHLO client.test")
        self.assertIn("SIZE 200", ehlo[0][2].split("\n"))
        d.send("MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>", "DATA")
        self.assertEqual(d.send_raw(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n"), [])
        self.assertEqual(d.send_raw((b"x" * 70 + b"\r\n") * 5), [])
        replies = d.send_raw(b".\r\n")
        self.assertEqual(replies, [(552, "5.3.4", "Message too big!")])
        self.assertEqual(self.queue.messages, [])
        self.assertIsNone(d.session.transaction.sender)
        # the connection goes on: a small message is accepted
        d.send("MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>", "DATA")
        self.assertEqual(self.codes(d.message("Subject: small\n\nok\n")), [250])

    def test_databytes_counts_the_message_not_the_wire(self) -> None:
        body = b"Subject: s\n\n" + b"y" * 50 + b"\n"
        d = self.dialogue({"databytes": str(len(body))})
        self.open_data(d)
        self.assertEqual(self.codes(d.message(body)), [250])

    def test_rfc1870_size_parameter_over_databytes_refused_at_mail(self) -> None:
        d = self.dialogue({"databytes": "200"})
        d.send("EHLO client.test")
        self.assertEqual([(r[0], r[1]) for r in d.send("MAIL FROM:<a@sender.test> SIZE=100000")],
                         [(552, "5.3.4")])
        self.assertIsNone(d.session.transaction.sender)
        self.assertEqual(self.codes(d.send("MAIL FROM:<a@sender.test> SIZE=200")), [250])

    def test_rfc1870_size_parameter_without_databytes_accepted(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        self.assertEqual(self.codes(d.send("MAIL FROM:<a@sender.test> SIZE=999999999")), [250])


class TimeoutTests(Base):
    def test_rfc5321_4_5_3_2_7_idle_timeout_421_and_close(self) -> None:
        d = self.dialogue({"timeoutsmtpd": "30", "timeout": "600"})
        self.clock.advance(29)
        self.assertEqual(d.transport.value(), b"")
        self.assertFalse(d.closed)
        self.clock.advance(1)
        self.assertEqual(d.transport.value(), b"421 4.4.2 Connection Timed Out\r\n")
        self.assertTrue(d.closed)

    def test_timeout_config_alone(self) -> None:
        d = self.dialogue({"timeout": "45"})
        self.clock.advance(44)
        self.assertFalse(d.closed)
        self.clock.advance(1)
        self.assertEqual(d.replies(), [(421, "4.4.2", "Connection Timed Out")])
        self.assertTrue(d.closed)

    def test_activity_restarts_the_idle_timer(self) -> None:
        d = self.dialogue({"timeout": "30"})
        self.clock.advance(20)
        d.send("NOOP")
        self.clock.advance(20)
        self.assertFalse(d.closed)
        self.clock.advance(10)
        self.assertEqual(self.codes(d.replies()), [421])
        self.assertTrue(d.closed)

    def test_data_timeout_uses_timeout(self) -> None:
        d = self.dialogue({"timeoutsmtpd": "30", "timeout": "600"})
        self.open_data(d)
        d.send_raw(b"Subject: slow\r\n")
        self.clock.advance(599)
        self.assertFalse(d.closed)
        self.assertEqual(d.transport.value(), b"")
        self.clock.advance(1)
        self.assertEqual(d.transport.value(), b"421 4.4.2 Connection Timed Out\r\n")
        self.assertTrue(d.closed)

    def test_timeout_closes_even_inside_data(self) -> None:
        d = self.dialogue({"timeout": "60"})
        self.open_data(d)
        self.clock.advance(60)
        self.assertEqual(self.codes(d.replies()), [421])
        self.assertTrue(d.closed)

    def test_no_timer_left_after_disconnect(self) -> None:
        d = self.dialogue()
        d.send("QUIT")
        d.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DisconnectTests(Base):
    def spool_files(self) -> list[str]:
        return sorted(os.listdir(self.spool)) if self.spool.exists() else []

    def test_disconnect_inside_data_leaves_no_spool_file(self) -> None:
        d = self.dialogue({"size_threshold": "10"})
        self.open_data(d)
        d.send_raw(b"Subject: partial\r\n\r\n" + b"z" * 500 + b"\r\nmore\r\n")
        self.assertEqual(len(self.spool_files()), 1, "the body should be spooled to a file by now")
        d.close()
        self.assertEqual(self.spool_files(), [])
        self.assertEqual(self.relay.seen[-2:], ["disconnect", "post_connection"])
        self.assertEqual(self.queue.messages, [])

    def test_disconnect_while_hook_in_flight(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        self.relay.delay = 5
        d.send("MAIL FROM:<a@sender.test>")
        d.close()
        self.clock.advance(5)
        self.assertEqual(d.transport.value(), b"")
        self.assertEqual(self.relay.seen, ["mail <a@sender.test>", "disconnect", "post_connection"])

    def test_client_eof_runs_disconnect_hooks(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        d.close()
        self.assertEqual(self.relay.seen, ["disconnect", "post_connection"])

    def test_spool_file_removed_after_queueing(self) -> None:
        d = self.dialogue({"size_threshold": "10"})
        self.open_data(d)
        self.assertEqual(self.codes(d.message("Subject: big\n\n" + "q" * 400 + "\n")), [250])
        self.assertEqual(self.spool_files(), [])


class AsyncDataHooks(Plugin):
    """data_headers_end, data_post and queue answer after one second."""

    name = "test_async_data"

    def register(self, *args: str) -> None:
        self.headers_end_answer: Any = None
        self.delay = 1.0
        self.hooks: list[str] = []

    def later(self, hook: str, answer: Any) -> Any:
        self.hooks.append(hook)
        if not self.delay:
            return answer
        pending: Deferred[Any] = Deferred()
        self.clock.callLater(self.delay, pending.callback, answer)
        return pending

    def hook_data_headers_end(self, transaction: Transaction) -> HookAnswer:
        return self.later("data_headers_end", self.headers_end_answer)

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        return self.later("data_post", None)

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        return self.later("queue", None)


class AsyncDataTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.d = self.dialogue(None, AsyncDataHooks)
        plugin = self.engine.plugins[1]
        assert isinstance(plugin, AsyncDataHooks)
        self.hooks = plugin

    def test_rfc2920_commands_after_the_message_wait_for_its_reply(self) -> None:
        d = self.d
        self.open_data(d)
        replies = d.send_raw(b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<c@sender.test>\r\n"
                             b"RCPT TO:<d@example.com>\r\nQUIT\r\n")
        self.assertEqual(replies, [])  # they wait in the buffer for the message's reply
        self.clock.advance(1)
        self.assertEqual(d.replies(), [])
        self.clock.advance(1)
        self.assertEqual(d.replies(), [])
        self.clock.advance(1)
        self.assertEqual(self.codes(d.replies()), [250, 250, 250, 221])
        self.assertEqual(self.hooks.hooks, ["data_headers_end", "data_post", "queue"])
        self.assertEqual(len(self.queue.messages), 1)

    def test_data_headers_end_deny_disconnect_later(self) -> None:
        d = self.d
        self.hooks.headers_end_answer = DENY_DISCONNECT
        self.open_data(d)
        self.assertEqual(d.send_raw(b"Subject: x\r\n\r\nbody\r\n"), [])
        self.assertEqual(d.send_raw(b"more\r\n.\r\nNOOP\r\n"), [])
        self.clock.advance(1)
        self.assertEqual(d.replies(), [(554, "5.7.1", "Message denied")])
        self.assertTrue(d.closed)
        self.clock.advance(5)
        self.assertEqual(d.replies(), [])
        self.assertEqual(self.hooks.hooks, ["data_headers_end"])
        self.assertEqual(self.queue.messages, [])

    def test_data_headers_end_at_end_of_data_answers_before_queueing(self) -> None:
        # a header block that ends with the message: the hook runs at the final dot
        d = self.d
        self.hooks.headers_end_answer = DENY_DISCONNECT
        self.open_data(d)
        self.assertEqual(d.send_raw(b"Subject: only a header\r\n.\r\n"), [])
        self.clock.advance(1)
        self.assertEqual(d.replies(), [(554, "5.7.1", "Message denied")])
        self.clock.advance(5)
        self.assertEqual(d.replies(), [])
        self.assertEqual(self.queue.messages, [])

    def test_data_headers_end_at_end_of_data_synchronous(self) -> None:
        d = self.d
        self.hooks.delay = 0
        self.hooks.headers_end_answer = DENY_DISCONNECT
        self.open_data(d)
        self.assertEqual(d.send_raw(b"Subject: only a header\r\n.\r\n"), [(554, "5.7.1", "Message denied")])
        self.assertTrue(d.closed)
        self.assertEqual(self.hooks.hooks, ["data_headers_end"])
        self.assertEqual(self.queue.messages, [])

    def test_disconnect_while_data_headers_end_in_flight(self) -> None:
        d = self.d
        self.open_data(d)
        d.send_raw(b"Subject: x\r\n\r\nbody\r\n")
        d.close()
        self.clock.advance(5)
        self.assertEqual(d.transport.value(), b"")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.queue.messages, [])

    def test_disconnect_while_queue_in_flight(self) -> None:
        d = self.d
        self.open_data(d)
        d.send_raw(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.hooks.hooks[-1], "queue")
        d.close()
        self.clock.advance(5)
        self.assertEqual(d.transport.value(), b"")
        self.assertEqual(self.relay.seen[-2:], ["disconnect", "post_connection"])


class ClosedConnectionTests(Base):
    def test_input_after_close_is_ignored_and_not_buffered(self) -> None:
        d = self.dialogue()
        d.send("QUIT")
        self.assertTrue(d.closed)
        self.assertEqual(d.send_raw(b"NOOP\r\n" * 1000), [])
        self.assertEqual(d.protocol._buffer, b"")


class StorageTests(Base):
    def test_header_block_too_large_552(self) -> None:
        d = self.dialogue({"max_header_size": "200"})
        self.open_data(d)
        header = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"f" * 40) for n in range(10))
        replies = d.send_raw(header + b"\r\nbody\r\n.\r\n")
        self.assertEqual(replies, [(552, "5.3.4", "Message header too large")])
        self.assertEqual(self.queue.messages, [])
        self.assertEqual(self.codes(d.send("NOOP")), [250])

    def test_spool_failure_is_a_temporary_452(self) -> None:
        blocker = Path(self.mktemp())
        blocker.write_text("not a directory\n")
        d = self.dialogue({"spool_dir": str(blocker / "spool"), "size_threshold": "0"})
        self.open_data(d)
        replies = d.send_raw(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        self.assertEqual([(r[0], r[1]) for r in replies], [(452, "4.3.1")])
        self.assertEqual(self.queue.messages, [])
