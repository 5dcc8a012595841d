"""Embedding: qptwisted as one service of a Twisted application, in-process."""

from __future__ import annotations

import os
import smtplib
import tempfile
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from qptwisted import QPSMTPDService
from qptwisted.testing import write_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embed.tac"


def message(token: str) -> bytes:
    return (f"From: alice@example.org\r\nTo: bob@mx.test\r\nSubject: {token}\r\n"
            f"Message-Id: <{token}@example.org>\r\n\r\nHello from {token}.\r\n").encode()


def smtp_deliver(port: int, token: str) -> tuple[int, bytes]:
    """A blocking client (run it in a thread): one message, then QUIT."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        client.ehlo("client.test")
        client.mail("alice@example.org")
        client.rcpt("bob@mx.test")
        return client.data(message(token))
    finally:
        client.quit()


class EmbeddingMixin:
    mktemp: Any
    addCleanup: Any

    def make_config(self) -> tuple[Path, Path]:
        base = Path(tempfile.mkdtemp(prefix="qpt-embed-"))
        import shutil

        self.addCleanup(shutil.rmtree, base, True)
        maildir = base / "Maildir"
        config = write_config(base / "config", {
            "me": "mx.test",
            "rcpthosts": "mx.test",
            "spool_dir": str(base / "spool"),
            "plugins": ["rcpt_ok", f"queue/maildir {maildir}"],
        })
        return config, maildir

    def all_closed(self, mx: QPSMTPDService) -> Deferred[None]:
        """Fires once every server-side connection has seen connectionLost."""
        factory = mx.factory
        done: Deferred[None] = Deferred()
        original = factory.closed

        def closed(ip: str) -> None:
            original(ip)
            if factory.connections == 0 and not done.called:
                done.callback(None)

        factory.closed = closed  # type: ignore[method-assign]
        return done


class EmbeddingTests(EmbeddingMixin, unittest.TestCase):
    @inlineCallbacks
    def test_service_with_endpoint_listener(self) -> Any:
        config, maildir = self.make_config()
        application = service.Application("embedded")
        mx = QPSMTPDService(str(config))
        mx.setServiceParent(application)
        service.IService(application).startService()
        self.addCleanup(service.IService(application).stopService)
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(mx.factory)
        self.addCleanup(port.stopListening)
        closed = self.all_closed(mx)
        code, reply = yield deferToThread(smtp_deliver, port.getHost().port, "endpoint")
        yield closed
        self.assertEqual(code, 250)
        self.assertIn(b"Queued! <endpoint@example.org>", reply)
        [stored] = list((maildir / "new").iterdir())
        raw = stored.read_bytes()
        self.assertIn(b"Delivered-To: bob@mx.test\n", raw)
        self.assertIn(b"Hello from endpoint.", raw)


class ExampleTacTests(EmbeddingMixin, unittest.TestCase):
    def setUp(self) -> None:
        self.config, self.maildir = self.make_config()
        saved = {name: os.environ.get(name) for name in ("QPSMTPD_CONFIG", "QPSMTPD_LISTEN")}

        def restore() -> None:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

        self.addCleanup(restore)
        os.environ["QPSMTPD_CONFIG"] = str(self.config)
        os.environ["QPSMTPD_LISTEN"] = "tcp:0:interface=127.0.0.1"

    @inlineCallbacks
    def test_embed_tac_delivers(self) -> Any:
        self.assertTrue(EXAMPLE.is_file())
        application = service.loadApplication(str(EXAMPLE), "python")
        top = service.IServiceCollection(application)
        [mx] = [child for child in top if isinstance(child, QPSMTPDService)]
        self.assertEqual(mx.config_dir, str(self.config))
        [listener] = [child for child in mx if isinstance(child, StreamServerEndpointService)]
        service.IService(application).startService()
        self.addCleanup(service.IService(application).stopService)
        # the endpoint service's port (we asked for port 0); chained, not consumed,
        # since the listener needs that result again to stop listening
        bound: Deferred[Any] = Deferred()

        def listening(port: Any) -> Any:
            bound.callback(port)
            return port

        assert listener._waitingForPort is not None
        listener._waitingForPort.addCallback(listening)
        port = yield bound
        closed = self.all_closed(mx)
        code, reply = yield deferToThread(smtp_deliver, port.getHost().port, "tac")
        yield closed
        self.assertEqual(code, 250)
        [stored] = list((self.maildir / "new").iterdir())
        self.assertIn(b"Hello from tac.", stored.read_bytes())
        self.assertIn(b"Return-Path: <alice@example.org>\n", stored.read_bytes())
