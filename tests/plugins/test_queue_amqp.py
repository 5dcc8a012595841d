"""queue/amqp against a private RabbitMQ node: confirms before 250, 451 for every way of not queueing."""

from __future__ import annotations

import base64
import json
import smtplib
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from qptwisted import Plugin
from qptwisted.service.server import SMTPFactory
from qptwisted.testing import make_engine
from tests.cluster_support import shared_rabbitmq, wait_for

MESSAGE = b"From: a@example.org\r\nTo: b@example.test\r\nSubject: amqp\r\n\r\nhello broker\r\n"


class Logs(Plugin):
    """Logging: keep every line."""

    name = "test_amqp_logs"
    lines: list[str] = []

    def hook_logging(self, transaction: Any, level: int, hook: Any, plugin: Any, message: str) -> None:
        type(self).lines.append(message)


class AMQPQueueTests(unittest.TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.broker = shared_rabbitmq()
        Logs.lines = []

    def serve(self, arguments: str = "", queue: str = "mail") -> int:
        """A loopback server whose queue plugin publishes to ``queue``; returns its port."""
        line = f"queue/amqp {self.broker.url} routing_key={queue} {arguments}".strip()
        engine = make_engine([Logs, "rcpt_ok", line], clock=reactor,
                             config={"rcpthosts": "example.test", "loglevel": "6", "me": "mx.test"})
        self.engine = engine
        self.plugin: Any = engine.plugin("queue/amqp")
        port = reactor.listenTCP(0, SMTPFactory(engine), interface="127.0.0.1")
        self.addCleanup(engine.close)
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def send(self, port: int, message: bytes = MESSAGE, recipients: tuple[str, ...] = ("b@example.test",)
             ) -> defer.Deferred[tuple[int, bytes]]:
        def client() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
                smtp.ehlo("client.example")
                smtp.mail("a@example.org")
                for rcpt in recipients:
                    smtp.rcpt(rcpt)
                return smtp.data(message)

        return deferToThread(client)

    @defer.inlineCallbacks
    def test_250_after_the_confirm_with_the_envelope_in_headers(self) -> Any:
        self.broker.declare("amqp-raw")
        port = self.serve(queue="amqp-raw")
        code, text = yield self.send(port, recipients=("b@example.test", "c@example.test"))
        self.assertEqual(code, 250, text)
        queue_id = text.decode().rsplit(" ", 1)[-1]
        [(properties, body)] = self.broker.drain("amqp-raw")
        self.assertEqual((properties.delivery_mode, properties.content_type, properties.message_id),
                         (2, "message/rfc822", queue_id))
        headers = properties.headers
        self.assertEqual(headers["x-envelope-from"], "a@example.org")
        self.assertEqual(headers["x-envelope-to"], ["b@example.test", "c@example.test"])
        self.assertEqual((headers["x-client-ip"], headers["x-helo"], headers["x-queue-id"]),
                         ("127.0.0.1", "client.example", queue_id))
        self.assertTrue(body.startswith(b"Received: from "), body[:80])
        self.assertTrue(body.endswith(b"\nhello broker\n"))

    @defer.inlineCallbacks
    def test_json_envelope_and_queue_declared(self) -> Any:
        self.broker.ctl("delete_queue", "amqp-json", check=False)
        port = self.serve("format=json", queue="amqp-json")
        code, _ = yield self.send(port)
        self.assertEqual(code, 250)
        [(properties, body)] = self.broker.drain("amqp-json")  # declared durable by the plugin
        document = json.loads(body)
        self.assertEqual(properties.content_type, "application/json")
        self.assertEqual((document["sender"], document["recipients"], document["client_ip"]),
                         ("a@example.org", ["b@example.test"], "127.0.0.1"))
        self.assertIn(b"Subject: amqp", base64.b64decode(document["raw"]))

    @defer.inlineCallbacks
    def test_unroutable_message_is_451(self) -> Any:
        self.broker.ctl("delete_queue", "nowhere", check=False)
        port = self.serve("declare=no", queue="nowhere")
        code, text = yield self.send(port)
        self.assertEqual((code, text), (451, b"4.3.0 Message broker unavailable, try again later"))
        self.assertTrue(any("not queued: UnroutableError" in line for line in Logs.lines))

    @defer.inlineCallbacks
    def test_nack_is_451_and_nothing_half_queued(self) -> Any:
        self.broker.declare("amqp-full", **{"x-max-length": 1, "x-overflow": "reject-publish"})
        port = self.serve("declare=no", queue="amqp-full")
        first, _ = yield self.send(port)
        second, _ = yield self.send(port)
        self.assertEqual((first, second), (250, 451))
        self.assertEqual(len(self.broker.drain("amqp-full")), 1)
        self.assertTrue(any("not queued: NackError" in line for line in Logs.lines))

    @defer.inlineCallbacks
    def test_no_confirm_within_the_timeout_is_451(self) -> Any:
        """A broker out of memory blocks publishers: no confirm comes, the client gets 451."""
        self.broker.declare("amqp-slow")
        port = self.serve("confirm_timeout=2", queue="amqp-slow")
        self.assertEqual((yield self.send(port))[0], 250)  # connected and working
        self.broker.ctl("set_vm_memory_high_watermark", "0")
        try:
            code, _ = yield self.send(port)
        finally:
            self.broker.ctl("set_vm_memory_high_watermark", "0.4")
        self.assertEqual(code, 451)
        self.assertTrue(any("not queued: TimeoutError" in line for line in Logs.lines), Logs.lines)
        # the late confirm may still come: that copy is the duplicate docs/scaling.md describes
        wait_for(lambda: self.broker.count("amqp-slow") >= 1, "the queue")
        self.broker.drain("amqp-slow")

    @defer.inlineCallbacks
    def test_broker_down_is_451_at_once_then_reconnects(self) -> Any:
        self.broker.declare("amqp-down")
        port = self.serve("queue=amqp-down max_backoff=2", queue="amqp-down")
        self.assertEqual((yield self.send(port))[0], 250)
        yield deferToThread(self.broker.stop_app)
        try:
            yield deferToThread(wait_for, lambda: not self.plugin.publisher.connected, "the loss")
            code, _ = yield self.send(port)
            self.assertEqual(code, 451)
        finally:
            yield deferToThread(self.broker.start_app)
        yield deferToThread(wait_for, lambda: self.plugin.publisher.connected, "the reconnect")
        self.assertEqual((yield self.send(port))[0], 250)
        self.assertEqual(len(self.broker.drain("amqp-down")), 2)
        self.assertTrue(any("lost the broker" in line for line in Logs.lines))
