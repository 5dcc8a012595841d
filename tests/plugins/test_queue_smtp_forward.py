"""queue/smtp-forward against a real Postfix and against scripted misbehaving downstreams."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK
from qptwisted.lib.smtpclient import Envelope, connect_client
from qptwisted.service.server import SMTPFactory
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.fake_smtp import FakeSMTPFactory
from tests.plugins.queue_support import free_port, header_of, shared_postfix, wait_for

MESSAGE = (b"From: alice@example.org\nTo: bob@example.test\nSubject: forward test\n"
           b"Message-Id: <fwd-1@example.org>\n\nfirst line\n.starts with a dot\n..two dots\nlast line\n")
LONG_NAME = "fwd." + ".".join(["y" * 60] * 3) + ".example"  # 197 characters, labels within 63


def plugin_of(engine: Any) -> Any:
    return next(p for p in engine.plugins if p.name == "queue/smtp-forward")


class ForwardMixin:
    def forwarder(self, line: str, clock: Any = None) -> Any:
        engine = make_engine([line], clock=clock if clock is not None else reactor)
        plugin = plugin_of(engine)
        self.addCleanup(lambda: defer.DeferredList(plugin.pool.close()))  # type: ignore[attr-defined]
        return engine

    def queue(self, engine: Any, recipients: tuple[str, ...] = ("<bob@example.test>",),
              message: bytes = MESSAGE) -> defer.Deferred[Any]:
        txn = make_transaction(engine, sender="<alice@example.org>", recipients=recipients, message=message)
        txn.connection.hello, txn.connection.hello_host = "ehlo", "client.example"
        txn.connection.remote_host = "client.example"
        self.txn = txn
        return run_hook(engine, "queue", txn)


class RealPostfixTests(ForwardMixin, unittest.TestCase):
    """Delivery through a private Postfix instance that writes Maildirs."""

    @staticmethod
    def txn_ident(txn: Any) -> str:
        return f"{txn.connection.id}.{txn.id}"

    def setUp(self) -> None:
        self.postfix = shared_postfix()

    @defer.inlineCallbacks
    def test_delivered_to_every_recipient_and_250_only_after_postfix(self) -> Any:
        engine = self.forwarder(f"queue/smtp-forward 127.0.0.1:{self.postfix.port} starttls=no")
        result = yield self.queue(engine, ("<bob@example.test>", "<carol@example.test>"))
        self.assertEqual(result.code, OK, result.message)
        self.assertIn("queued as", result.message)
        self.assertEqual(self.txn.notes["queue_id"], result.message.rsplit(" ", 1)[-1])
        for user in ("bob", "carol"):
            messages = wait_for(lambda user=user: self.postfix.delivered(user), f"{user}'s maildir")
            self.assertEqual(len(messages), 1)
            body = messages[0].split(b"\n\n", 1)[1]
            self.assertEqual(body, b"first line\n.starts with a dot\n..two dots\nlast line\n")
            self.assertEqual(header_of(messages[0], "Message-Id"), ["<fwd-1@example.org>"])

    @defer.inlineCallbacks
    def test_unknown_recipient_refused_and_nothing_delivered(self) -> Any:
        engine = self.forwarder(f"queue/smtp-forward 127.0.0.1 {self.postfix.port}")
        result = yield self.queue(engine, ("<bob@example.test>", "<nobody@example.test>"))
        self.assertEqual(result.code, DENY, result.message)
        self.assertIn("<nobody@example.test>: 550", result.message)
        self.assertNotIn("bob@", result.message)
        self.assertEqual(self.postfix.delivered("bob"), [])
        notes = self.txn.notes["queue/smtp-forward_results"]
        self.assertTrue(notes["bob@example.test"].startswith("250"))

    @defer.inlineCallbacks
    def test_starttls_verified_against_the_downstream_certificate(self) -> Any:
        engine = self.forwarder(f"queue/smtp-forward 127.0.0.1:{self.postfix.port} starttls=require "
                                f"verify=yes cafile={self.postfix.cert} tls_name=localhost")
        result = yield self.queue(engine)
        self.assertEqual(result.code, OK, result.message)
        message = wait_for(lambda: self.postfix.delivered("bob"), "bob's maildir")[0]  # type: ignore[index]
        self.assertIn("with ESMTPS", " ".join(header_of(message, "Received")))

    @defer.inlineCallbacks
    def test_wrong_certificate_name_is_a_temporary_failure(self) -> Any:
        engine = self.forwarder(f"queue/smtp-forward 127.0.0.1:{self.postfix.port} starttls=require "
                                f"verify=yes cafile={self.postfix.cert} tls_name=other.example")
        result = yield self.queue(engine)
        self.assertEqual(result.code, DENYSOFT)
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_xclient_shows_the_real_client_to_postfix(self) -> Any:
        engine = self.forwarder(f"queue/smtp-forward 127.0.0.1:{self.postfix.port} xclient starttls=no")
        result = yield self.queue(engine)
        self.assertEqual(result.code, OK, result.message)
        message = wait_for(lambda: self.postfix.delivered("bob"), "bob's maildir")[0]  # type: ignore[index]
        received = header_of(message, "Received")[0]
        self.assertIn("client.example", received)
        self.assertIn("192.0.2.1", received)

    @defer.inlineCallbacks
    def test_xclient_client_with_its_own_helo_name(self) -> Any:
        engine = self.forwarder(f"queue/smtp-forward 127.0.0.1:{self.postfix.port} xclient starttls=no")
        txn = make_transaction(engine, sender="<alice@example.org>", recipients=["<bob@example.test>"],
                               message=MESSAGE)
        connection = txn.connection
        connection.remote_ip, connection.remote_host = "192.0.2.25", "name.example"
        connection.hello, connection.hello_host = "ehlo", "helo.example"
        result = yield run_hook(engine, "queue", txn)
        self.assertEqual(result.code, OK, result.message)
        message = wait_for(lambda: self.postfix.delivered("bob"), "bob's maildir")[0]  # type: ignore[index]
        received = header_of(message, "Received")[0]
        self.assertIn("from helo.example (name.example [192.0.2.25])", received)

    # (the private Postfix speaks IPv4 only; IPv6 clients over XCLIENT: tests/plugins/test_xclient.py)
    @defer.inlineCallbacks
    def test_xforward_names_the_real_client_in_postfix_log(self) -> Any:
        engine = self.forwarder(f"queue/smtp-forward 127.0.0.1:{self.postfix.port} xforward starttls=no "
                                "reuse=0")
        txn = make_transaction(engine, sender="<alice@example.org>", recipients=["<bob@example.test>"],
                               message=MESSAGE)
        connection = txn.connection
        # long enough to need two XFORWARD commands (Postfix's line bound is 512 there)
        connection.remote_ip, connection.remote_host = "192.0.2.26", LONG_NAME
        connection.hello, connection.hello_host = "ehlo", "helo." + LONG_NAME
        result = yield run_hook(engine, "queue", txn)
        self.assertEqual(result.code, OK, result.message)
        wait_for(lambda: self.postfix.delivered("bob"), "bob's maildir")
        # Postfix logs the forwarded client (its Received names the connection it had)
        wait_for(lambda: f"client={LONG_NAME}[192.0.2.26]" in self.postfix.log(), "the client in the log")
        self.assertIn(f"orig_queue_id={self.txn_ident(txn)}", self.postfix.log())

    @defer.inlineCallbacks
    def test_connection_reused_across_messages(self) -> Any:
        engine = self.forwarder(f"queue/smtp-forward 127.0.0.1:{self.postfix.port} reuse=1 xforward")
        first = yield self.queue(engine)
        protocol = plugin_of(engine).pool._idle[0][0].protocol
        second = yield self.queue(engine)
        self.assertEqual((first.code, second.code), (OK, OK))
        self.assertIs(plugin_of(engine).pool._idle[0][0].protocol, protocol)
        wait_for(lambda: len(self.postfix.delivered("bob")) == 2, "two messages")

    @defer.inlineCallbacks
    def test_end_to_end_client_qptwisted_postfix(self) -> Any:
        engine = make_engine(["rcpt_ok", f"queue/smtp-forward 127.0.0.1:{self.postfix.port}"],
                             clock=reactor, config={"rcpthosts": "example.test"})
        self.addCleanup(lambda: defer.DeferredList(plugin_of(engine).pool.close()))
        port = reactor.listenTCP(0, SMTPFactory(engine), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = yield defer.ensureDeferred(connect_client(endpoint, reactor, "client.test"))
        result = yield defer.ensureDeferred(client.send_message(
            Envelope("alice@example.org", ["bob@example.test"]), [MESSAGE]))
        client.quit()
        yield client.protocol.closed
        self.assertEqual(result.data.code, 250, str(result.data))
        message = wait_for(lambda: self.postfix.delivered("bob"), "bob's maildir")[0]  # type: ignore[index]
        received = header_of(message, "Received")
        self.assertIn("by downstream.test", received[0])
        self.assertIn("by mx.test", received[1])


class MisbehavingDownstreamTests(ForwardMixin, unittest.TestCase):
    """Scripted downstreams: refusals, deferrals, hang-ups, silence, nobody home."""

    def serve(self, **script: object) -> tuple[FakeSMTPFactory, int]:
        factory = FakeSMTPFactory(**script)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    @defer.inlineCallbacks
    def test_refused_after_data_is_552(self) -> Any:
        factory, port = self.serve(end="554 5.7.1 content rejected")
        result = yield self.queue(self.forwarder(f"queue/smtp-forward 127.0.0.1:{port}"))
        self.assertEqual(result.code, DENY)
        self.assertIn("554 5.7.1 content rejected", result.message)

    @defer.inlineCallbacks
    def test_refused_sender_is_552(self) -> Any:
        factory, port = self.serve(MAIL="553 5.1.8 sender refused")
        result = yield self.queue(self.forwarder(f"queue/smtp-forward 127.0.0.1:{port}"))
        self.assertEqual(result.code, DENY)
        self.assertNotIn("DATA", factory.commands)

    @defer.inlineCallbacks
    def test_deferred_after_data_is_452(self) -> Any:
        factory, port = self.serve(end="451 4.3.0 try later")
        result = yield self.queue(self.forwarder(f"queue/smtp-forward 127.0.0.1:{port}"))
        self.assertEqual(result.code, DENYSOFT)
        self.assertIn("451 4.3.0", result.message)

    @defer.inlineCallbacks
    def test_one_deferred_recipient_sends_nothing_and_is_452(self) -> Any:
        def rcpt(server: Any, line: str) -> str:
            return "450 4.2.1 mailbox busy" if "carol" in line else "250 ok"

        factory, port = self.serve(RCPT=rcpt)
        result = yield self.queue(self.forwarder(f"queue/smtp-forward 127.0.0.1:{port}"),
                                  ("<bob@example.test>", "<carol@example.test>"))
        self.assertEqual(result.code, DENYSOFT)
        self.assertIn("<carol@example.test>: 450", result.message)
        self.assertNotIn("DATA", factory.commands)
        self.assertIn("RSET", factory.commands)
        self.assertEqual(factory.messages, [])

    @defer.inlineCallbacks
    def test_disconnect_mid_data_is_452(self) -> Any:
        factory, port = self.serve(cut_after_lines=2)
        result = yield self.queue(self.forwarder(f"queue/smtp-forward 127.0.0.1:{port}"))
        self.assertEqual(result.code, DENYSOFT)
        self.assertEqual(factory.messages, [])

    @defer.inlineCallbacks
    def test_greeting_refusal_is_452(self) -> Any:
        factory, port = self.serve(greeting="554 go away")
        result = yield self.queue(self.forwarder(f"queue/smtp-forward 127.0.0.1:{port}"))
        self.assertEqual(result.code, DENYSOFT)

    @defer.inlineCallbacks
    def test_nobody_listening_is_452(self) -> Any:
        result = yield self.queue(self.forwarder(f"queue/smtp-forward 127.0.0.1:{free_port()}"))
        self.assertEqual(result.code, DENYSOFT)

    @defer.inlineCallbacks
    def test_silent_downstream_times_out_on_the_engine_clock(self) -> Any:
        factory, port = self.serve(end=None)
        clock = Clock()
        engine = self.forwarder(f"queue/smtp-forward 127.0.0.1:{port} data_timeout=30", clock=clock)
        answer = self.queue(engine)
        yield factory.data_done
        self.assertNoResult(answer)
        clock.advance(31)
        result = yield answer
        self.assertEqual(result.code, DENYSOFT)

    @defer.inlineCallbacks
    def test_pipelining_sends_mail_and_rcpts_together(self) -> Any:
        factory, port = self.serve()
        result = yield self.queue(self.forwarder(f"queue/smtp-forward 127.0.0.1:{port} reuse=0"),
                                  ("<bob@example.test>", "<carol@example.test>"))
        self.assertEqual(result.code, OK)
        self.assertEqual(factory.commands[1:5], ["MAIL FROM:<alice@example.org> BODY=8BITMIME",
                                                 "RCPT TO:<bob@example.test>",
                                                 "RCPT TO:<carol@example.test>", "DATA"])
        self.assertIn(b"\r\n..starts with a dot\r\n...two dots\r\n", factory.messages[0])
