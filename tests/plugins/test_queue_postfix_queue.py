"""queue/postfix-queue against a real Postfix's cleanup service, and the record protocol it speaks."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK, ConfigError
from qptwisted.lib.postfix import (
    CHUNK,
    FLAGS,
    CleanupProtocol,
    CleanupResult,
    Envelope,
    message_records,
    parse_flags,
    record,
)
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.queue_support import cleanup_postfix, header_of, wait_for

MESSAGE = (b"Received: from client.test (client.test [192.0.2.1])\n"
           b"\tby mx.test; Thu, 1 Jan 1970 00:00:00 +0000\n"
           b"From: Alice <alice@example.org>\nSubject: {subject}\nMessage-Id: <pq-1@example.org>\n\n"
           b"body\n.dot line\n" + b"x" * 3000 + b"\nend\n")


def queue(line: str, subject: str = "hello", recipients: tuple[str, ...] = ("<bob@example.test>",),
          sender: str = "<alice@example.org>", clock: Any = None, config: Any = None) -> defer.Deferred[Any]:
    engine = make_engine([line], clock=clock if clock is not None else reactor, config=config)
    txn = make_transaction(engine, sender=sender, recipients=recipients,
                           message=MESSAGE.replace(b"{subject}", subject.encode()))
    return run_hook(engine, "queue", txn)


class RealPostfixTests(unittest.TestCase):
    """The message ends up in Postfix's queue (and a Maildir behind it) with its envelope."""

    def setUp(self) -> None:
        self.postfix = cleanup_postfix()
        self.socket = self.postfix.cleanup_socket

    @defer.inlineCallbacks
    def test_queued_and_delivered_with_the_envelope(self) -> Any:
        result = yield queue(f"queue/postfix-queue {self.socket}", sender="<alice@example.org>",
                             recipients=("<bob@example.test>", "<carol@example.test>"))
        self.assertEqual(result.code, OK)
        self.assertRegex(result.message, r"^Queued! <pq-1@example\.org> \(Queue-Id: [0-9A-Za-z]+\)$")
        for user in ("bob", "carol"):
            [message] = wait_for(lambda user=user: self.postfix.delivered(user), f"delivery to {user}")
            self.assertEqual(header_of(message, "Return-Path"), ["<alice@example.org>"])
            self.assertEqual(header_of(message, "Delivered-To"), [f"{user}@example.test"])
            self.assertEqual(header_of(message, "Subject"), ["hello"])
            # the records were joined back into lines: long lines, dot lines and the last line intact
            body = message.split(b"\n\n", 1)[1]
            self.assertEqual(body, b"body\n.dot line\n" + b"x" * 3000 + b"\nend\n")

    @defer.inlineCallbacks
    def test_flag_hold_keeps_it_in_the_queue_with_its_envelope(self) -> Any:
        result = yield queue(f"queue/postfix-queue {self.socket} FLAG_HOLD", subject="held",
                             recipients=("<bob@example.test>", "<carol@example.test>"))
        self.assertEqual(result.code, OK)
        queue_id = result.message.rsplit("Queue-Id: ", 1)[1].rstrip(")")
        listing = self.postfix.postcat(queue_id)
        self.assertIn(f"hold/{queue_id}", listing)
        self.assertIn("sender: alice@example.org", listing)
        self.assertIn("recipient: bob@example.test", listing)
        self.assertIn("recipient: carol@example.test", listing)
        self.assertIn("named_attribute: rewrite_context=remote", listing)
        self.assertIn("Subject: held", listing)

    @defer.inlineCallbacks
    def test_null_sender(self) -> Any:
        result = yield queue(f"queue/postfix-queue {self.socket} FLAG_HOLD", sender="<>")
        self.assertEqual(result.code, OK)
        queue_id = result.message.rsplit("Queue-Id: ", 1)[1].rstrip(")")
        self.assertIn("sender: \n", self.postfix.postcat(queue_id))

    @defer.inlineCallbacks
    def test_a_refusal_of_cleanup_is_5xx_with_postfixs_reason(self) -> Any:
        result = yield queue(f"queue/postfix-queue {self.socket} FLAG_FILTER", subject="please reject-me")
        self.assertEqual((result.code, result.message), (DENY, "5.7.1 no thanks"))

    @defer.inlineCallbacks
    def test_without_flag_filter_header_checks_do_not_apply(self) -> Any:
        result = yield queue(f"queue/postfix-queue {self.socket}", subject="please reject-me")
        self.assertEqual(result.code, OK)

    @defer.inlineCallbacks
    def test_a_temporary_failure_of_cleanup_is_4xx(self) -> Any:
        # FLAG_MAP_OK: cleanup consults canonical_maps, which it cannot open, and asks to try later
        result = yield queue(f"queue/postfix-queue {self.socket} FLAG_MAP_OK")
        self.assertEqual(result.code, DENYSOFT)
        self.assertTrue(result.message.startswith("4."), result.message)

    @defer.inlineCallbacks
    def test_cleanup_sockets_are_tried_in_order(self) -> Any:
        missing = short_directory(self) / "no-cleanup"
        result = yield queue("queue/postfix-queue",
                             config={"cleanup_sockets": [str(missing), str(self.socket)]})
        self.assertEqual(result.code, OK)


class ConfigurationTests(unittest.TestCase):
    def plugin(self, line: str) -> Any:
        return make_engine([line]).plugins[0]

    def test_qpsmtpd_line_socket_then_flags(self) -> None:
        plugin = self.plugin("queue/postfix-queue /var/spool/postfix/public/cleanup FLAG_FILTER FLAG_BCC_OK")
        self.assertEqual(plugin.socket, "/var/spool/postfix/public/cleanup")
        self.assertEqual(plugin.flags, FLAGS["FLAG_FILTER"] | FLAGS["FLAG_BCC_OK"])

    def test_flags_alone_and_the_external_mask(self) -> None:
        plugin = self.plugin("queue/postfix-queue FLAG_MASK_EXTERNAL")
        self.assertIsNone(plugin.socket)
        self.assertEqual(plugin.flags, 0b1110010)
        self.assertEqual(plugin.sockets(), ["/var/spool/postfix/public/cleanup"])

    @defer.inlineCallbacks
    def test_a_socket_path_too_long_for_the_kernel_is_unreachable(self) -> Any:
        result = yield queue(f"queue/postfix-queue /{'x' * 120}/cleanup")
        self.assertEqual(result.code, DENYSOFT)

    def test_host_and_port(self) -> None:
        self.assertEqual(self.plugin("queue/postfix-queue 127.0.0.1:10026").socket, "127.0.0.1:10026")

    def test_a_word_that_is_no_flag_stops_the_start(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.plugin("queue/postfix-queue FLAG_FILTRE")
        self.assertIn("'FLAG_FILTRE' is not one of flag_none", str(caught.exception))

    def test_environment_and_config_file_come_first(self) -> None:
        engine = make_engine(["queue/postfix-queue /run/cleanup"], config={"cleanup_sockets": ["/a", "b:10"]})
        plugin = engine.plugins[0]
        self.assertEqual(plugin.sockets(), ["/a", "b:10"])
        self.patch(os, "environ", {**os.environ, "POSTFIXQUEUE": "/env/cleanup"})
        self.assertEqual(plugin.sockets(), ["/env/cleanup"])

    def test_parse_flags(self) -> None:
        self.assertEqual(parse_flags(["FLAG_HOLD", "flag_bounce", "nonsense"]),
                         (FLAGS["FLAG_HOLD"] | FLAGS["FLAG_BOUNCE"], ["nonsense"]))


def short_directory(case: unittest.TestCase) -> Path:
    """A fresh directory with a short path: a Unix socket's path must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="qpt-pq-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


class _Silent(Protocol):
    """A cleanup that accepts the connection and never says anything."""

    connected: defer.Deferred[None]

    def connectionMade(self) -> None:
        type(self).connected.callback(None)


class UnreachableTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_no_cleanup_is_4xx(self) -> Any:
        missing = short_directory(self) / "cleanup"
        result = yield queue(f"queue/postfix-queue {missing}")
        self.assertEqual(result.code, DENYSOFT)
        self.assertIn("try again later", result.message)

    @defer.inlineCallbacks
    def test_a_silent_cleanup_is_given_up_on_the_engine_clock(self) -> Any:
        path = short_directory(self) / "cleanup"
        _Silent.connected = defer.Deferred()
        port = yield UNIXServerEndpoint(reactor, str(path)).listen(Factory.forProtocol(_Silent))
        self.addCleanup(port.stopListening)
        clock = Clock()
        answer = queue(f"queue/postfix-queue {path} timeout=30", clock=clock)
        yield _Silent.connected
        self.assertNoResult(answer)
        clock.advance(31)
        result = yield answer
        self.assertEqual(result.code, DENYSOFT)


class ProtocolTests(unittest.TestCase):
    """The wire format, without Postfix: records, attribute groups split anywhere."""

    def test_record_lengths_are_base_128_little_endian(self) -> None:
        self.assertEqual(record(b"N", b"abc"), b"N\x03abc")
        self.assertEqual(record(b"N", b"x" * 200)[:3], b"N\xc8\x01")
        self.assertEqual(record(b"N", b"x" * 20000)[:4], b"N\xa0\x9c\x01")
        self.assertEqual(record(b"M"), b"M\x00")

    def test_lines_are_records_and_long_ones_continue(self) -> None:
        records = b"".join(message_records([b"Subject: a\n\nab", b"c\n" + b"y" * (CHUNK + 5) + b"\nlast"]))
        expected = (record(b"N", b"Subject: a") + record(b"N", b"") + record(b"N", b"abc")
                    + record(b"L", b"y" * CHUNK) + record(b"N", b"yyyyy") + record(b"N", b"last"))
        self.assertEqual(records, expected)

    def test_envelope_records(self) -> None:
        envelope = Envelope("a@example.org", ["b@example.test"], [("rewrite_context", "remote")],
                            arrival=12.5)
        self.assertEqual(envelope.records(),
                         record(b"T", b"12 500000") + record(b"A", b"rewrite_context=remote")
                         + record(b"S", b"a@example.org") + record(b"R", b"b@example.test") + record(b"M"))

    def test_attribute_groups_in_pieces(self) -> None:
        protocol = CleanupProtocol(FLAGS["FLAG_FILTER"], Envelope("", ["b@example.test"]), [b"Subject: x\n"])
        written: list[bytes] = []

        class Transport:
            def write(self, data: bytes) -> None:
                written.append(data)

            def registerProducer(self, producer: Any, streaming: bool) -> None:
                pass

            def unregisterProducer(self) -> None:
                pass

            def loseConnection(self) -> None:
                written.append(b"<closed>")

        protocol.transport = Transport()  # type: ignore[assignment]
        for piece in (b"protocol\0cleanup_proto", b"col\0queue_id\0ABC1", b"23\0", b"\0"):
            protocol.dataReceived(piece)
        self.assertEqual(written[0], b"flags\x002\x00\x00")
        self.assertTrue(b"".join(written).endswith(record(b"X") + record(b"E")))
        for piece in (b"status\0", b"8\0reason\0", b"5.7.1 no\0\0"):
            protocol.dataReceived(piece)
        result = self.successResultOf(protocol.done)
        self.assertEqual(result, CleanupResult("ABC123", 8, "5.7.1 no"))
        self.assertFalse(result.temporary)
        self.assertEqual(written[-1], b"<closed>")

    def test_status_bits(self) -> None:
        self.assertTrue(CleanupResult("Q", 0).queued)
        self.assertTrue(CleanupResult("Q", 1 << 8).temporary)
        self.assertTrue(CleanupResult("Q", (1 << 2) | (1 << 1)).temporary)  # soft wins, as in qpsmtpd
        self.assertFalse(CleanupResult("Q", 1 << 4).temporary)
        self.assertTrue(CleanupResult("Q", 1 << 12).temporary)  # unknown: try later
        self.assertEqual(CleanupResult("Q", 1 << 4).explanation(), "5.4.0 too many hops")
