"""The realistic chain, end to end over TCP and the loopback DNS server.

config/plugins::

    dnsbl
    sender_permitted_from reject 0
    dkim
    dmarc reject 1
    greylisting recipient 1 black_timeout 300
    rcpt_ok
    (a queue plugin that keeps the message)

Three clients, told apart by their loopback source address: a listed one
(127.0.0.2) refused at RCPT, an honest one (127.0.0.1) greylisted once and
then delivered with spf/dkim/dmarc=pass in Authentication-Results, and a
forger (127.0.0.3) refused after DATA by example.org's p=reject.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientFactory
from twisted.internet.task import Clock
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest

from qptwisted import OK, HookAnswer, Plugin, Transaction
from qptwisted.core.replies import Reply, ReplyParser
from qptwisted.service.server import SMTPFactory
from qptwisted.testing import make_engine
from qptwisted.testing.dns import start_dns_server
from tests.plugins.dkim_support import MESSAGE, keypair, sign

ZONE = {
    "2.0.0.127.bl.test": [("A", "127.0.0.2"), ("TXT", "127.0.0.2 is listed in bl.test")],
    "example.org": [("TXT", "v=spf1 ip4:127.0.0.1 -all"), ("MX", (10, "mx.example.org"))],
    "_dmarc.example.org": [("TXT", "v=DMARC1; p=reject")],
    "sel._domainkey.example.org": [("TXT", keypair()[1])],
}


class KeepQueue(Plugin):
    """Queue plugin of the test: keeps each message."""

    name = "test/keep"
    kept: list[bytes] = []

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        type(self).kept.append(transaction.message_bytes())
        return OK, "Queued"


class Client(LineReceiver):
    """A minimal SMTP client: one command at a time, each reply a Deferred."""

    delimiter = b"\r\n"

    def connectionMade(self) -> None:
        self.parser = ReplyParser(strict=True)
        self.pending: list[defer.Deferred[Reply]] = [self.factory.greeting]  # type: ignore[attr-defined]
        self.closed: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        for reply in self.parser.feed(line + b"\r\n"):
            self.pending.pop(0).callback(reply)

    def send(self, line: str) -> defer.Deferred[Reply]:
        d: defer.Deferred[Reply] = defer.Deferred()
        self.pending.append(d)
        self.sendLine(line.encode())
        return d

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


class ChainTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.clock = Clock()
        self.clock.advance(1_000_000)
        KeepQueue.kept = []
        self.engine = make_engine(
            ["dnsbl", "sender_permitted_from reject 0", "dkim", "dmarc reject 1",
             "greylisting recipient 1 black_timeout 300", "rcpt_ok", (KeepQueue, ())],
            config={**self.dns.config(), "dnsbl_zones": "bl.test", "rcpthosts": "example.test",
                    "me": "mx.example.test"},
            clock=self.clock, threads=True)  # SPF and DKIM ask the DNS server of this process from threads
        self.addCleanup(self.engine.plugins[4].store.close)  # type: ignore[attr-defined]
        self.port = reactor.listenTCP(0, SMTPFactory(self.engine), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def session(self, source: str, sender: str, message: bytes | None) -> Any:
        """EHLO, MAIL, RCPT, (DATA), QUIT; the replies from MAIL on."""
        factory = ClientFactory.forProtocol(Client)
        factory.greeting = defer.Deferred()  # type: ignore[attr-defined]
        protocols: list[Client] = []
        original = factory.buildProtocol

        def build(addr: Any) -> Any:
            protocol = original(addr)
            protocols.append(protocol)
            return protocol

        factory.buildProtocol = build  # type: ignore[method-assign]
        reactor.connectTCP("127.0.0.1", self.port.getHost().port, factory,  # type: ignore[attr-defined]
                           bindAddress=(source, 0))
        greeting = yield factory.greeting  # type: ignore[attr-defined]
        self.assertEqual(greeting[0], 220)
        client = protocols[0]
        replies = []
        self.assertEqual((yield client.send("EHLO client.example.org"))[0], 250)
        replies.append((yield client.send(f"MAIL FROM:{sender}")))
        replies.append((yield client.send("RCPT TO:<bob@example.test>")))
        if message is not None and replies[-1][0] == 250:
            replies.append((yield client.send("DATA")))
            if replies[-1][0] == 354:
                for line in message.decode().split("\n")[:-1]:
                    client.sendLine(("." + line if line.startswith(".") else line).encode())
                replies.append((yield client.send(".")))
        yield client.send("QUIT")
        yield client.closed
        return replies

    @defer.inlineCallbacks
    def test_listed_greylisted_delivered_and_forged(self) -> Any:
        listed = yield self.session("127.0.0.2", "<alice@example.org>", None)
        self.assertEqual(listed[1], (550, "5.7.1", "127.0.0.2 is listed in bl.test"))

        first = yield self.session("127.0.0.1", "<alice@example.org>", sign(MESSAGE))
        self.assertEqual([code for code, *_ in first], [250, 450])
        self.assertIn("temporarily denied", first[1].text)
        self.clock.advance(301)
        retry = yield self.session("127.0.0.1", "<alice@example.org>", sign(MESSAGE))
        self.assertEqual([code for code, *_ in retry], [250, 250, 354, 250])
        self.assertEqual(len(KeepQueue.kept), 1)
        header = KeepQueue.kept[0].split(b"\n\n", 1)[0].decode()
        results = header.split("Authentication-Results: ", 1)[1].split("\nReceived", 1)[0]
        self.assertTrue(results.startswith("mx.example.test;"))
        self.assertIn("spf=pass smtp.mailfrom=alice@example.org", results)
        self.assertRegex(results, r"dkim=pass header\.d=example\.org header\.s=sel")
        self.assertIn("dmarc=pass (p=reject dis=none) header.from=example.org", results)
        self.assertIn("Received-SPF: Pass (", header)

        forged = sign(MESSAGE).replace(b"Hello Bob", b"Send money")
        yield self.session("127.0.0.3", "<alice@example.org>", forged)
        self.clock.advance(301)
        refused = yield self.session("127.0.0.3", "<alice@example.org>", forged)
        self.assertEqual([code for code, *_ in refused], [250, 250, 354, 552])
        self.assertIn("failed DMARC policy of example.org", refused[-1].text)
        self.assertEqual(len(KeepQueue.kept), 1)
