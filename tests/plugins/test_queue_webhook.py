"""queue/webhook against a real twisted.web server started by the test."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web import resource, server

from qpplugins.queue.webhook import signature
from qptwisted import DENY, DENYSOFT, OK
from qptwisted.testing import make_engine, make_transaction, run_hook

MESSAGE = b"""From: a@example.org
Subject: photo for sale
Message-Id: <w-1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: multipart/alternative; boundary="b2"

--b2
Content-Type: text/plain; charset=utf-8

A chair, slightly used.
--b2
Content-Type: text/html; charset=utf-8

<p>A chair</p>
--b2--
--b1
Content-Type: image/png
Content-Disposition: attachment; filename="chair.png"
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--b1--
"""


class Endpoint(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.hold: list[Any] = []

    def render_POST(self, request: Any) -> Any:
        body = request.content.read()
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((headers, body))
        if self.status == 0:
            self.hold.append(request)
            return server.NOT_DONE_YET
        request.setResponseCode(self.status)
        return b"ok"


class WebhookTests(unittest.TestCase):
    def setUp(self) -> None:
        self.endpoint = Endpoint()
        site = server.Site(self.endpoint)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/inbound"

    def queue(self, extra: str = "", clock: Any = None) -> defer.Deferred[Any]:
        engine = make_engine([f"queue/webhook {self.url} {extra}".strip()],
                             clock=clock if clock is not None else reactor)
        txn = make_transaction(engine, sender="<a@example.org>", recipients=["<sell@example.net>"],
                               message=MESSAGE)
        return run_hook(engine, "queue", txn)

    @defer.inlineCallbacks
    def test_2xx_is_250_and_the_document_is_complete_and_signed(self) -> Any:
        result = yield self.queue("secret=k3y")
        self.assertEqual(result.code, OK)
        [(headers, body)] = self.endpoint.requests
        self.assertEqual(headers["x-qptwisted-signature"], signature(b"k3y", body))
        doc = json.loads(body)
        self.assertEqual(doc["sender"], "a@example.org")
        self.assertEqual(doc["recipients"], ["sell@example.net"])
        self.assertEqual(doc["subject"], "photo for sale")
        self.assertEqual(doc["text"].strip(), "A chair, slightly used.")
        self.assertEqual(doc["html"].strip(), "<p>A chair</p>")
        [attachment] = doc["attachments"]
        self.assertEqual(attachment["filename"], "chair.png")
        self.assertEqual(base64.b64decode(attachment["content"]), base64.b64decode("iVBORw0KGgo="))

    @defer.inlineCallbacks
    def test_5xx_is_temporary(self) -> Any:
        self.endpoint.status = 503
        result = yield self.queue()
        self.assertEqual(result.code, DENYSOFT)

    @defer.inlineCallbacks
    def test_4xx_is_permanent(self) -> Any:
        self.endpoint.status = 422
        result = yield self.queue()
        self.assertEqual(result.code, DENY)

    @defer.inlineCallbacks
    def test_slow_endpoint_times_out_on_the_engine_clock(self) -> Any:
        self.endpoint.status = 0
        clock = Clock()
        answer = self.queue("timeout=5", clock)
        while not self.endpoint.hold:
            yield defer.Deferred.fromCoroutine(_tick())
        clock.advance(6)
        result = yield answer
        self.assertEqual(result.code, DENYSOFT)
        for request in self.endpoint.hold:
            request.transport.abortConnection()


async def _tick() -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.01, lambda: None)
