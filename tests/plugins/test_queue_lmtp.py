"""queue/lmtp against a real Dovecot LMTP server and a scripted LMTP server."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.fake_smtp import FakeSMTPFactory
from tests.plugins.queue_support import shared_dovecot

MESSAGE = b"From: a@example.org\nSubject: lmtp\nMessage-Id: <l-1@example.org>\n\nhello\n.dotted\n"


class LMTPMixin:
    def lmtp(self, line: str) -> Any:
        engine = make_engine([line], clock=reactor)
        plugin = next(p for p in engine.plugins if p.name == "queue/lmtp")
        self.addCleanup(lambda: defer.DeferredList(plugin.pool.close()))  # type: ignore[attr-defined]
        return engine

    def queue(self, engine: Any, *recipients: str) -> defer.Deferred[Any]:
        self.txn = make_transaction(engine, sender="<a@example.org>", recipients=recipients, message=MESSAGE)
        return run_hook(engine, "queue", self.txn)


class DovecotTests(LMTPMixin, unittest.TestCase):
    def setUp(self) -> None:
        self.dovecot = shared_dovecot()

    @defer.inlineCallbacks
    def test_every_recipient_delivered(self) -> Any:
        engine = self.lmtp(f"queue/lmtp 127.0.0.1:{self.dovecot.port}")
        result = yield self.queue(engine, "<bob@example.test>", "<carol@example.test>")
        self.assertEqual(result.code, OK, result.message)
        for user in ("bob", "carol"):
            [message] = self.dovecot.delivered(user)
            self.assertTrue(message.endswith(b"\n\nhello\n.dotted\n"))

    @defer.inlineCallbacks
    def test_unknown_user_refused_before_data_nothing_delivered(self) -> Any:
        engine = self.lmtp(f"queue/lmtp 127.0.0.1:{self.dovecot.port}")
        result = yield self.queue(engine, "<bob@example.test>", "<nope@example.test>")
        self.assertEqual(result.code, DENY)
        self.assertIn("<nope@example.test>: 550", result.message)
        self.assertEqual(self.dovecot.delivered("bob"), [])

    @defer.inlineCallbacks
    def test_failure_after_data_is_reported_not_hidden(self) -> Any:
        engine = self.lmtp(f"queue/lmtp 127.0.0.1:{self.dovecot.port}")
        result = yield self.queue(engine, "<bob@example.test>", "<full@example.test>")
        # bob has his copy; full's quota failure still refuses the message (the documented rule)
        self.assertIn(result.code, (DENY, DENYSOFT))
        self.assertIn("<full@example.test>", result.message)
        self.assertNotIn("<bob@example.test>:", result.message)
        self.assertEqual(len(self.dovecot.delivered("bob")), 1)
        self.assertEqual(self.dovecot.delivered("full"), [])
        results = self.txn.notes["queue/lmtp_results"]
        self.assertTrue(results["bob@example.test"].startswith("250"))


class ScriptedLMTPTests(LMTPMixin, unittest.TestCase):
    def serve(self, **script: object) -> tuple[FakeSMTPFactory, int]:
        factory = FakeSMTPFactory(**script)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    @defer.inlineCallbacks
    def test_one_reply_per_recipient_read(self) -> Any:
        factory, port = self.serve(end="250 2.0.0 <b> saved\n250 2.0.0 <c> saved")
        result = yield self.queue(self.lmtp(f"queue/lmtp 127.0.0.1:{port}"), "<b@x.test>", "<c@x.test>")
        self.assertEqual(result.code, OK)
        self.assertEqual(factory.commands[0], "LHLO mx.test")

    @defer.inlineCallbacks
    def test_temporary_failure_of_one_recipient_is_452(self) -> Any:
        factory, port = self.serve(end="250 2.0.0 saved\n452 4.2.2 over quota")
        result = yield self.queue(self.lmtp(f"queue/lmtp 127.0.0.1:{port}"), "<b@x.test>", "<c@x.test>")
        self.assertEqual(result.code, DENYSOFT)
        self.assertIn("<c@x.test>: 452 4.2.2 over quota", result.message)

    @defer.inlineCallbacks
    def test_missing_reply_for_a_recipient_is_452(self) -> Any:
        def hang_up(server: Any, line: str) -> None:
            server.sendLine(b"250 2.0.0 saved")
            server.transport.loseConnection()

        factory, port = self.serve(end=hang_up)
        result = yield self.queue(self.lmtp(f"queue/lmtp 127.0.0.1:{port}"), "<b@x.test>", "<c@x.test>")
        self.assertEqual(result.code, DENYSOFT)
