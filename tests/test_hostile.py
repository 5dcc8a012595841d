"""Hostile clients, in memory on an injected clock: unread replies, floods, byte-dripping, full houses.

Each test pins one bound of docs/limits.md; the figures in the comments are
what a client could do before the bound existed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from qptwisted import OK, HookAnswer, Plugin, Transaction
from qptwisted.service.server import SMTPFactory, default_max_connections, with_backlog
from qptwisted.testing import make_engine
from tests.core_support import CaptureQueue, Dialogue


class Base(unittest.TestCase):
    def dialogue(self, config: dict[str, str] | None = None, *plugins: Any) -> Dialogue:
        self.clock = Clock()
        settings = {"rcpthosts": "example.com", **(config or {})}
        engine = make_engine([*plugins, "rcpt_ok", CaptureQueue], config=settings, clock=self.clock)
        d = Dialogue(engine)
        self.addCleanup(d.close)
        return d


class UnreadRepliesTests(Base):
    """The transport pauses us when the client does not read: we stop reading and answering."""

    def test_paused_output_stops_answering_and_reading(self) -> None:
        d = self.dialogue({"max_commands": "0"})
        d.send("EHLO client.test")
        d.protocol.pauseProducing()  # what the transport does when its buffer passes 64 KiB
        flood = b"NOOP\r\n" * 10_000
        self.assertEqual(d.send_raw(flood), [])  # nothing answered while the client does not read
        self.assertEqual(d.transport.producerState, "paused")  # and the socket is no longer read
        self.assertLessEqual(len(d.protocol._buffer), len(flood))
        d.protocol.resumeProducing()  # the client read its replies
        replies = d.replies()
        self.assertEqual(len(replies), 10_000)
        self.assertEqual(d.transport.producerState, "producing")

    def test_input_buffered_while_paused_is_bounded(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        d.protocol.pauseProducing()
        for _ in range(100):
            d.send_raw(b"NOOP\r\n" * 10)
            if d.transport.producerState == "paused":
                break
        # paused once a command line's worth is waiting: the kernel's buffers hold the rest
        self.assertEqual(d.transport.producerState, "paused")
        self.assertLessEqual(len(d.protocol._buffer), 512 + 60)


class CommandFloodTests(Base):
    def test_max_commands_between_messages(self) -> None:
        d = self.dialogue({"max_commands": "50"})
        replies = d.send(*(["NOOP"] * 50))
        self.assertEqual({r[0] for r in replies}, {250})
        self.assertEqual(d.send("NOOP"), [(421, "4.7.0", "mx.test Too many commands, closing connection")])
        self.assertTrue(d.closed)

    def test_an_accepted_message_starts_the_count_again(self) -> None:
        d = self.dialogue({"max_commands": "10"})
        d.send("EHLO client.test", "NOOP", "NOOP")
        self.assertEqual(d.deliver("<a@example.org>", ["<b@example.com>"], "Subject: x\n\nhi\n")[-1][0], 250)
        replies = d.send(*(["RSET"] * 10))
        self.assertEqual({r[0] for r in replies}, {250})
        self.assertFalse(d.closed)

    def test_mail_rset_loop_is_cut(self) -> None:
        d = self.dialogue({"max_commands": "100"})
        d.send("EHLO client.test")
        codes = [r[0] for r in d.send(*[f"MAIL FROM:<s{n}@example.org>" for n in range(200)])]
        self.assertEqual(codes[-1], 421)
        self.assertEqual(len(codes), 100)


class DeadlineTests(Base):
    def test_a_command_line_must_arrive_whole_within_timeoutsmtpd(self) -> None:
        # before: every byte reset the timer, so one byte every few seconds held the slot forever
        d = self.dialogue({"timeoutsmtpd": "10"})
        for _ in range(3):
            self.clock.advance(3)
            self.assertEqual(d.send_raw(b"N"), [])
        self.clock.advance(1.5)
        self.assertEqual(d.replies(), [(421, "4.4.2", "Connection Timed Out")])
        self.assertTrue(d.closed)

    def test_complete_commands_keep_the_session_alive(self) -> None:
        d = self.dialogue({"timeoutsmtpd": "10"})
        for _ in range(10):
            self.clock.advance(9)
            self.assertEqual(d.send("NOOP")[0][0], 250)
        self.assertFalse(d.closed)

    def test_a_message_must_arrive_at_the_minimum_rate(self) -> None:
        d = self.dialogue({"timeout": "10", "data_min_rate": "100"})
        self.assertEqual([r[0] for r in d.send("EHLO c.test", "MAIL FROM:<a@example.org>",
                                               "RCPT TO:<b@example.com>", "DATA")], [250, 250, 250, 354])
        d.send_raw(b"x" * 500)  # 500 bytes buy 5 s more than the 10 s of `timeout`
        for _ in range(4):
            self.clock.advance(3)
            d.send_raw(b"y")  # one byte every 3 s: never idle for `timeout`, but far too slow
        self.assertEqual(d.replies(), [])
        self.clock.advance(3.5)
        self.assertEqual(d.replies(), [(421, "4.4.2", "Message too slow, closing connection")])

    def test_a_message_at_a_good_rate_is_not_cut(self) -> None:
        d = self.dialogue({"timeout": "10", "data_min_rate": "100"})
        d.send("EHLO c.test", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>", "DATA")
        d.send_raw(b"Subject: slow but steady\r\n\r\n")
        for _ in range(30):
            self.clock.advance(1)
            d.send_raw(b"z" * 200 + b"\r\n")
        self.assertEqual(d.send_raw(b".\r\n")[0][0], 250)

    def test_a_session_has_a_maximum_length(self) -> None:
        d = self.dialogue({"timeoutsmtpd": "100", "max_session_time": "1000"})
        for _ in range(10):
            self.clock.advance(99)
            d.send("NOOP")
        self.assertFalse(d.closed)
        self.clock.advance(99)
        self.assertEqual(d.replies()[-1], (421, "4.4.2", "Session too long, closing connection"))
        self.assertTrue(d.closed)


class SlowQueue(Plugin):
    name = "test_slow_queue"
    pending: Deferred[Any]

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        type(self).pending = Deferred()
        return type(self).pending


class QueueTimeoutTests(Base):
    def test_a_slow_queue_plugin_is_waited_for_not_answered_4xx(self) -> None:
        # before: after plugin_timeout the client got 452 while the delivery went on: a duplicate
        d = self.dialogue({"plugin_timeout": "1"}, SlowQueue)
        replies = d.deliver("<a@example.org>", ["<b@example.com>"], "Subject: x\n\nhi\n")
        self.assertEqual(replies[-1][0], 354)
        self.clock.advance(30)
        self.assertEqual(d.replies(), [])  # still delivering: no answer yet
        SlowQueue.pending.callback((OK, "Queued at last"))
        self.assertEqual(d.replies(), [(250, "2.6.0", "Queued at last")])


class ConnectionCapTests(unittest.TestCase):
    def connect(self, factory: SMTPFactory, ip: str) -> StringTransport:
        transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 25))
        factory.buildProtocol(IPv4Address("TCP", ip, 40000)).makeConnection(transport)
        return transport

    def test_total_and_per_ip_caps_answer_421(self) -> None:
        engine = make_engine(["rcpt_ok"], config={"max_connections": "3", "max_conn_ip": "2"})
        factory = SMTPFactory(engine)
        first, second = self.connect(factory, "192.0.2.1"), self.connect(factory, "192.0.2.1")
        self.assertTrue(first.value().startswith(b"220 ") and second.value().startswith(b"220 "))
        third = self.connect(factory, "192.0.2.1")
        self.assertEqual(third.value(), b"421 4.7.0 mx.test Too many connections from 192.0.2.1, try again "
                                        b"later\r\n")
        self.assertTrue(third.disconnecting)
        self.assertTrue(self.connect(factory, "192.0.2.2").value().startswith(b"220 "))
        full = self.connect(factory, "192.0.2.3")
        self.assertEqual(full.value(), b"421 4.7.0 mx.test Too many connections, try again later\r\n")
        self.assertEqual(factory.connections, 3)

    def test_default_cap_leaves_headroom_below_the_fd_limit(self) -> None:
        self.assertEqual(default_max_connections(1024), 480)
        self.assertLess(default_max_connections(65536), 65536)

    def test_listeners_get_a_large_backlog(self) -> None:
        self.assertEqual(with_backlog("tcp:25"), "tcp:25:backlog=1024")
        self.assertEqual(with_backlog("2525"), "2525:backlog=1024")
        self.assertEqual(with_backlog("tcp6:25:interface=\\:\\:"), "tcp6:25:interface=\\:\\::backlog=1024")
        self.assertEqual(with_backlog("tcp:25:backlog=10"), "tcp:25:backlog=10")
        self.assertEqual(with_backlog("systemd:domain=INET:index=0"), "systemd:domain=INET:index=0")


class LoopbackExemptionTests(unittest.TestCase):
    def test_loopback_is_not_capped_per_ip(self) -> None:
        engine = make_engine(["rcpt_ok"], config={"max_conn_ip": "1"})
        factory = SMTPFactory(engine)
        for _ in range(3):
            transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
            factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000)).makeConnection(transport)
            self.assertTrue(transport.value().startswith(b"220 "))
