"""examples/amqp_to_web.py: mail queued by queue/amqp becomes a web post (the seed talk's application)."""

from __future__ import annotations

import importlib.util
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server

from qptwisted import OK
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.cluster_support import shared_rabbitmq

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "amqp_to_web.py"
PICTURE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("amqp_to_web", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class AdSite(resource.Resource):
    """The classified-ads site: keeps each post; refuses titles with 'spam' (400)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[dict[bytes, list[bytes]]] = []

    def render_POST(self, request: Any) -> bytes:
        args = dict(request.args)
        if b"spam" in args.get(b"title", [b""])[0]:
            request.setResponseCode(400)
            return b"no spam"
        self.posts.append(args)
        return b"posted"


def mail(subject: str, picture: bool = True) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "fred@example.org", "ads@example.test", subject
    message.set_content("Blue sofa, three seats, free to collect.\n")
    if picture:
        message.add_attachment(PICTURE, maintype="image", subtype="png", filename="sofa.png")
    return message.as_bytes()


class AmqpToWebTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_mail_becomes_an_ad(self) -> Any:
        broker = shared_rabbitmq()
        broker.declare("ads")
        site = AdSite()
        port = reactor.listenTCP(0, server.Site(site), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        engine = make_engine([f"queue/amqp {broker.url} routing_key=ads"], clock=reactor)
        self.addCleanup(engine.close)
        for subject, user in (("Free sofa", "fred"), ("Free chair", ""), ("cheap spam", "fred")):
            txn = make_transaction(engine, sender="<fred@example.org>", recipients=["<ads@example.test>"],
                                   message=mail(subject))
            txn.connection.auth_user = user or None
            result = yield run_hook(engine, "queue", txn)
            self.assertEqual(result.code, OK, result.message)

        example = load_example()
        outcomes = yield defer.Deferred.fromCoroutine(example.consume(
            reactor, broker.url, "ads", f"http://127.0.0.1:{port.getHost().port}/post",
            recipient="ads@example.test", limit=3))
        self.assertEqual(outcomes, ["posted", "sender not authenticated", "refused"])
        [post] = site.posts
        self.assertEqual(post[b"title"], [b"Free sofa"])
        self.assertEqual(post[b"body"], [b"Blue sofa, three seats, free to collect.\n"])
        self.assertEqual(post[b"image1"], [PICTURE])
        self.assertEqual(broker.count("ads"), 0)
