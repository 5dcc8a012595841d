"""queue/smtp-forward and queue/lmtp with the ESMTP extensions: BDAT downstream, DSN passed on,
REQUIRETLS, BINARYMIME; against a private Postfix (its queue file shows the DSN flags), Dovecot
LMTP, qptwisted itself and a scripted server."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import replace
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK, Address
from qptwisted.lib import smtpclient
from qptwisted.lib.smtpclient import Envelope, connect_client, smtp_bdat
from qptwisted.mail.dsn import MessageDSN, RecipientDSN
from qptwisted.service.server import SMTPFactory
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.fake_smtp import FakeSMTPFactory
from tests.plugins.queue_support import PATIENCE, Postfix, header_of, shared_dovecot, wait_for

MESSAGE = (b"From: alice@example.org\nTo: bob@example.test\nSubject: esmtp relay\n"
           b"Message-Id: <esmtp-1@example.org>\n\nfirst line\n.starts with a dot\n..two dots\nlast line\n")
BODY = MESSAGE.split(b"\n\n", 1)[1]

_postfix: dict[str, Any] = {}


def held_postfix() -> Postfix:
    """A Postfix of this module: holds mail for held@example.test (its queue file stays to be read)."""
    if "skip" in _postfix:
        raise unittest.SkipTest(_postfix["skip"])
    if "postfix" not in _postfix:
        import atexit

        try:
            postfix = Postfix(lambda function, *args: atexit.register(function, *args), users=("bob", "held"),
                              extra="smtpd_recipient_restrictions = check_recipient_access "
                                    "texthash:$config_directory/hold, permit_mynetworks, "
                                    "reject_unauth_destination\n")
        except unittest.SkipTest as skip:
            _postfix["skip"] = str(skip)
            raise
        (postfix.config / "hold").write_text("held@example.test HOLD\n")
        _postfix["postfix"] = postfix
    postfix = _postfix["postfix"]
    postfix.clear()
    return postfix  # type: ignore[no-any-return]


@defer.inlineCallbacks
def poll(condition: Any) -> Any:
    """Wait for ``condition()`` while the reactor runs (bounded); its value."""
    deadline = time.monotonic() + PATIENCE
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting")
        yield task.deferLater(reactor, 0.05, lambda: None)
    return value


def queue_file(postfix: Postfix, queue_id: str) -> str:
    """``postcat`` of a queued message: envelope records and content."""
    run = subprocess.run(["postcat", "-c", str(postfix.config), "-q", queue_id], capture_output=True,
                         text=True, env=postfix.env, timeout=PATIENCE)
    return run.stdout + run.stderr


def relay(case: unittest.TestCase, line: str) -> Any:
    engine = make_engine([line], clock=reactor)
    plugin = next(p for p in engine.plugins if p.name.startswith("queue/"))
    case.addCleanup(lambda: defer.DeferredList(plugin.pool.close()))
    return engine


def transaction(engine: Any, recipients: tuple[str, ...] = ("<bob@example.test>",),
                message: bytes = MESSAGE) -> Any:
    txn = make_transaction(engine, sender="<alice@example.org>", recipients=recipients, message=message)
    txn.connection.hello, txn.connection.hello_host = "ehlo", "client.example"
    return txn


class SmtpBdatTests(unittest.SynchronousTestCase):
    def test_stored_form_to_bdat_chunks(self) -> None:
        out = list(smtp_bdat([b"Subject: x\n\n", b".dot\n" * 3, b"end"], size=12))
        self.assertEqual(out, [(b"BDAT 14\r\n", [b"Subject: x\r\n\r\n"]),
                               (b"BDAT 18\r\n", [b".dot\r\n.dot\r\n.dot\r\n"]),
                               (b"BDAT 3 LAST\r\n", [b"end"])])

    def test_binary_body_is_sent_as_it_is(self) -> None:
        out = list(smtp_bdat([b"Subject: b\n\n", b"\x00\n\r\n"], binary=True))
        self.assertEqual(out, [(b"BDAT 18 LAST\r\n", [b"Subject: b\r\n\r\n", b"\x00\n\r\n"])])

    def test_empty_message_is_bdat_0_last(self) -> None:
        self.assertEqual(list(smtp_bdat([])), [(b"BDAT 0 LAST\r\n", [])])


class PostfixTests(unittest.TestCase):
    """queue/smtp-forward into a private Postfix that offers CHUNKING and DSN."""

    def setUp(self) -> None:
        self.postfix = held_postfix()

    @defer.inlineCallbacks
    def test_bdat_downstream_message_intact(self) -> Any:
        engine = relay(self, f"queue/smtp-forward 127.0.0.1:{self.postfix.port} starttls=no reuse=0")
        result = yield run_hook(engine, "queue", transaction(engine))
        self.assertEqual(result.code, OK, result.message)
        [message] = wait_for(lambda: self.postfix.delivered("bob"), "bob's maildir")  # type: ignore[misc]
        self.assertTrue(message.endswith(b"\n\n" + BODY), message)
        # Postfix's own count of the commands of that session (logged once the connection closed)
        line = yield poll(lambda: re.search(r"disconnect from .* bdat=1 .*", self.postfix.log()))
        self.assertNotIn("data=", line.group(0))

    @defer.inlineCallbacks
    def test_rfc3461_dsn_parameters_reach_the_postfix_queue_file(self) -> Any:
        engine = relay(self, f"queue/smtp-forward 127.0.0.1:{self.postfix.port} starttls=no")
        txn = transaction(engine, ("<held@example.test>",))
        txn.dsn = MessageDSN("HDRS", "env+1")
        txn.recipients = [replace(txn.recipients[0], dsn=RecipientDSN(("SUCCESS", "FAILURE"),
                                                                      ("rfc822", "orig+2B1@example.org")))]
        result = yield run_hook(engine, "queue", txn)
        self.assertEqual(result.code, OK, result.message)
        records = queue_file(self.postfix, txn.notes["queue_id"])
        self.assertIn("notify_flags=6", records)  # SUCCESS (2) | FAILURE (4)
        self.assertIn("dsn_orig_rcpt=rfc822;orig+1@example.org", records)
        self.assertIn("envelope_id=env+1", records)
        self.assertIn("ret_flags=2", records)  # HDRS

    @defer.inlineCallbacks
    def test_end_to_end_client_dsn_through_qptwisted_to_postfix(self) -> Any:
        engine = make_engine(["rcpt_ok", f"queue/smtp-forward 127.0.0.1:{self.postfix.port}"], clock=reactor,
                             config={"rcpthosts": "example.test"})
        forward = next(p for p in engine.plugins if p.name == "queue/smtp-forward")
        self.addCleanup(lambda: defer.DeferredList(forward.pool.close()))
        port = reactor.listenTCP(0, SMTPFactory(engine), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = yield defer.ensureDeferred(connect_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), reactor, "client.test"))
        self.assertIn("CHUNKING", client.extensions)
        self.assertIn("DSN", client.extensions)
        dsn = ["NOTIFY=DELAY", "ORCPT=rfc822;first@example.org"]
        envelope = Envelope("alice@example.org", ["held@example.test"], ["RET=FULL", "ENVID=e2e"],
                            rcpt_params={"held@example.test": dsn})
        result = yield defer.ensureDeferred(client.send_message(envelope, [MESSAGE]))
        client.quit()
        yield client.protocol.closed
        self.assertEqual(result.data.code, 250, str(result.data))
        queue_id = re.search(r"queued as (\w+)", result.data.text).group(1)  # type: ignore[union-attr]
        records = queue_file(self.postfix, queue_id)
        self.assertIn("notify_flags=8", records)  # DELAY
        self.assertIn("dsn_orig_rcpt=rfc822;first@example.org", records)
        self.assertIn("envelope_id=e2e", records)
        self.assertIn("ret_flags=1", records)  # FULL

    @defer.inlineCallbacks
    def test_rfc8689_requiretls_forces_tls_even_with_starttls_no(self) -> Any:
        engine = relay(self, f"queue/smtp-forward 127.0.0.1:{self.postfix.port} starttls=no")
        txn = transaction(engine)
        txn.requiretls = True
        result = yield run_hook(engine, "queue", txn)
        self.assertEqual(result.code, OK, result.message)
        [message] = wait_for(lambda: self.postfix.delivered("bob"), "bob's maildir")  # type: ignore[misc]
        self.assertIn("with ESMTPS", " ".join(header_of(message, "Received")))

    @defer.inlineCallbacks
    def test_rfc3030_binarymime_refused_by_a_downstream_without_it(self) -> Any:
        engine = relay(self, f"queue/smtp-forward 127.0.0.1:{self.postfix.port} starttls=no")
        txn = transaction(engine)
        txn.body_type = "BINARYMIME"
        result = yield run_hook(engine, "queue", txn)
        self.assertEqual(result.code, DENY)
        self.assertIn("5.6.3", result.message)
        self.assertEqual(self.postfix.delivered("bob"), [])


class DovecotTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dovecot = shared_dovecot()

    @defer.inlineCallbacks
    def test_lmtp_with_bdat(self) -> Any:
        chunks: list[bytes] = []

        def spy(*args: Any, **kwargs: Any) -> Any:
            for command, pieces in smtp_bdat(*args, **kwargs):
                chunks.append(command)
                yield command, pieces

        self.patch(smtpclient, "smtp_bdat", spy)
        engine = relay(self, f"queue/lmtp 127.0.0.1:{self.dovecot.port}")
        result = yield run_hook(engine, "queue", transaction(engine, ("<bob@example.test>",
                                                                      "<carol@example.test>")))
        self.assertEqual(result.code, OK, result.message)
        wire_size = len(MESSAGE) + MESSAGE.count(b"\n")
        self.assertEqual(chunks, [f"BDAT {wire_size} LAST\r\n".encode()])
        for user in ("bob", "carol"):
            [message] = self.dovecot.delivered(user)
            self.assertTrue(message.endswith(b"\n\n" + BODY))

    @defer.inlineCallbacks
    def test_rfc8689_requiretls_refused_by_a_downstream_without_tls(self) -> Any:
        engine = relay(self, f"queue/lmtp 127.0.0.1:{self.dovecot.port}")
        txn = transaction(engine)
        txn.requiretls = True
        result = yield run_hook(engine, "queue", txn)
        self.assertEqual(result.code, DENYSOFT)
        self.assertIn("4.7.10", result.message)
        self.assertEqual(self.dovecot.delivered("bob"), [])


class ChunkFailureTests(unittest.TestCase):
    """A downstream that refuses a chunk: the refusal is the answer and the connection is not reused."""

    def serve(self, **script: object) -> tuple[FakeSMTPFactory, int]:
        factory = FakeSMTPFactory(**script)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    @defer.inlineCallbacks
    def test_refused_chunk_without_pipelining(self) -> Any:
        self.patch(smtpclient, "BDAT_CHUNK", 40)
        factory, port = self.serve(extensions=["CHUNKING"], BDAT="452 4.3.1 disk full")
        engine = relay(self, f"queue/smtp-forward 127.0.0.1:{port}")
        result = yield run_hook(engine, "queue", transaction(engine))
        self.assertEqual(result.code, DENYSOFT)
        self.assertIn("452 4.3.1 disk full", result.message)
        self.assertEqual(len([c for c in factory.commands if c.startswith("BDAT")]), 1)
        self.assertEqual(factory.messages, [])

    @defer.inlineCallbacks
    def test_refused_chunk_with_pipelining(self) -> Any:
        self.patch(smtpclient, "BDAT_CHUNK", 40)
        factory, port = self.serve(extensions=["CHUNKING", "PIPELINING"], BDAT="552 5.3.4 too big")
        engine = relay(self, f"queue/smtp-forward 127.0.0.1:{port}")
        result = yield run_hook(engine, "queue", transaction(engine))
        self.assertEqual(result.code, DENY)
        self.assertIn("552 5.3.4 too big", result.message)
        plugin = next(p for p in engine.plugins if p.name == "queue/smtp-forward")
        self.assertEqual(plugin.pool._idle, [])

    @defer.inlineCallbacks
    def test_dsn_not_passed_to_a_downstream_without_dsn(self) -> Any:
        factory, port = self.serve(extensions=["PIPELINING", "CHUNKING"])
        engine = relay(self, f"queue/smtp-forward 127.0.0.1:{port}")
        txn = transaction(engine)
        txn.dsn = MessageDSN("FULL", None)
        txn.recipients = [replace(txn.recipients[0], dsn=RecipientDSN(("NEVER",), None))]
        result = yield run_hook(engine, "queue", txn)
        self.assertEqual(result.code, OK, result.message)
        self.assertEqual([c for c in factory.commands if c.startswith(("MAIL", "RCPT"))],
                         ["MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.test>"])

    @defer.inlineCallbacks
    def test_binary_message_to_a_downstream_with_binarymime(self) -> Any:
        factory, port = self.serve(extensions=["PIPELINING", "CHUNKING", "BINARYMIME"])
        engine = relay(self, f"queue/smtp-forward 127.0.0.1:{port}")
        txn = transaction(engine, message=b"Subject: bin\n\n")
        txn.body_type = "BINARYMIME"
        txn.body_write(b"\x00\r\n\n\xff")
        result = yield run_hook(engine, "queue", txn)
        self.assertEqual(result.code, OK, result.message)
        self.assertEqual(factory.commands[1], "MAIL FROM:<alice@example.org> BODY=BINARYMIME")
        self.assertTrue(factory.messages[0].endswith(b"Subject: bin\r\n\r\n\x00\r\n\n\xff"))


class MaildirDSNTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_dsn_request_written_as_header_fields(self) -> Any:
        directory = self.mktemp()
        engine = make_engine([f"queue/maildir {directory}"])
        txn = transaction(engine, ("<bob@example.test>", "<carol@example.test>"))
        txn.dsn = MessageDSN("HDRS", "id 1")
        txn.recipients[0] = replace(txn.recipients[0],
                                    dsn=RecipientDSN(("SUCCESS",), ("rfc822", "bob@example.test")))
        result = yield run_hook(engine, "queue", txn)
        self.assertEqual(result.code, OK, result.message)
        import os

        [name] = os.listdir(os.path.join(directory, "new"))
        with open(os.path.join(directory, "new", name), "rb") as handle:
            head = handle.read().split(b"\n\n", 1)[0].split(b"\n")
        self.assertEqual(head[:3], [b"Return-Path: <alice@example.org>", b"X-DSN-Mail: RET=HDRS ENVID=id+201",
                                    b"X-DSN-Rcpt: <bob@example.test> NOTIFY=SUCCESS "
                                    b"ORCPT=rfc822;bob@example.test"])
        self.assertNotIn(b"carol", b"\n".join(line for line in head if line.startswith(b"X-DSN")))

    def test_address_dsn_is_not_part_of_equality(self) -> None:
        plain = Address("bob", "example.test")
        self.assertEqual(plain, replace(plain, dsn=RecipientDSN(("NEVER",), None), policy_group="vip"))
