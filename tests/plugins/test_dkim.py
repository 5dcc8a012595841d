"""dkim: verification of good and tampered signatures, signing, over a loopback DNS server."""

from __future__ import annotations

from typing import Any

import dkim as dkimpy
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from qptwisted import DECLINED, DENY
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.dns import start_dns_server
from tests.plugins.dkim_support import MESSAGE, keypair, sign


class DKIMVerifyTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, {"sel._domainkey.example.org": [("TXT", keypair()[1])]})
        self.dns.servfail("broken._domainkey.example.org")

    @defer.inlineCallbacks
    def verify(self, message: bytes, line: str = "dkim") -> Any:
        engine = make_engine([line], config=self.dns.config(timeout=0.5), clock=reactor)
        txn = make_transaction(engine, make_connection(remote_ip="192.0.2.1"), sender="<alice@example.org>",
                               message=message)
        yield run_hook(engine, "data_post_headers", txn)
        post = yield run_hook(engine, "data_post", txn)
        return txn, post

    @defer.inlineCallbacks
    def test_good_signature(self) -> Any:
        txn, post = yield self.verify(sign(MESSAGE))
        self.assertEqual([info["result"] for info in txn.notes["dkim"]], ["pass"])
        self.assertEqual(len(txn.auth_results), 1)
        self.assertRegex(txn.auth_results[0],
                         r"^dkim=pass header\.d=example\.org header\.s=sel header\.b=\S{8}$")
        self.assertEqual(post.code, DECLINED)

    @defer.inlineCallbacks
    def test_body_tampered(self) -> Any:
        txn, post = yield self.verify(sign(MESSAGE).replace(b"Hello Bob", b"Hello Eve"), "dkim reject 1")
        self.assertEqual(txn.notes["dkim"][0]["result"], "fail")
        self.assertTrue(txn.auth_results[0].startswith("dkim=fail"))
        self.assertEqual(post.code, DENY)

    @defer.inlineCallbacks
    def test_header_tampered(self) -> Any:
        txn, post = yield self.verify(sign(MESSAGE).replace(b"Subject: hello", b"Subject: pay now"))
        self.assertEqual(txn.notes["dkim"][0]["result"], "fail")
        self.assertEqual(post.code, DECLINED)  # reject 0 (default) only records

    @defer.inlineCallbacks
    def test_missing_key_is_permerror_and_dns_failure_temperror(self) -> Any:
        txn, _ = yield self.verify(sign(MESSAGE, selector="gone"))
        self.assertEqual(txn.notes["dkim"][0]["result"], "permerror")
        txn, _ = yield self.verify(sign(MESSAGE, selector="broken"))
        self.assertEqual(txn.notes["dkim"][0]["result"], "temperror")

    @defer.inlineCallbacks
    def test_every_signature_and_unsigned(self) -> Any:
        txn, _ = yield self.verify(sign(sign(MESSAGE), selector="gone"))
        self.assertEqual([info["result"] for info in txn.notes["dkim"]], ["permerror", "pass"])
        self.assertEqual(len(txn.auth_results), 2)
        txn, _ = yield self.verify(MESSAGE)
        self.assertEqual(txn.auth_results, ["dkim=none"])


class DKIMSignTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, {"s2025._domainkey.example.org": [("TXT", keypair("sign")[1])]})

    def engine(self, line: str = "dkim") -> Any:
        return make_engine([line], clock=reactor, config={
            **self.dns.config(), "dkim/example.org/selector": "s2025",
            "dkim/example.org/private": keypair("sign")[0].decode().splitlines()})

    @defer.inlineCallbacks
    def test_signed_for_relay_clients_and_verifies_with_dkimpy(self) -> Any:
        engine = self.engine("dkim canonicalization relaxed/simple headers from:to:subject:date")
        txn = make_transaction(engine, make_connection(relay_client=True),
                               sender="<alice@example.org>", message=MESSAGE)
        yield run_hook(engine, "data_post_headers", txn)
        self.assertIn("DKIM-Signature", txn.header)
        signature = str(txn.header["DKIM-Signature"])
        self.assertIn("c=relaxed/simple", signature)
        self.assertIn("h=from : to : subject", " ".join(signature.split()))
        txn.prepend_header("Received", "from somewhere")  # later hops add headers above it
        stored = txn.message_bytes()
        resolver = engine.resolver.dnspython()
        from qpplugins.dkim import txt_function

        ok = yield deferToThread(dkimpy.verify, stored, dnsfunc=txt_function(resolver))
        self.assertTrue(ok)
        tampered = yield deferToThread(dkimpy.verify, stored.replace(b"Hello Bob", b"Hello Eve"),
                                       dnsfunc=txt_function(resolver))
        self.assertFalse(tampered)

    @defer.inlineCallbacks
    def test_authenticated_user_signed_unknown_domain_not(self) -> Any:
        engine = self.engine()
        txn = make_transaction(engine, make_connection(auth_user="alice"), message=MESSAGE)
        yield run_hook(engine, "data_post_headers", txn)
        self.assertIn("DKIM-Signature", txn.header)
        other = MESSAGE.replace(b"alice@example.org", b"alice@elsewhere.example")
        txn = make_transaction(engine, make_connection(relay_client=True), message=other)
        yield run_hook(engine, "data_post_headers", txn)
        self.assertNotIn("DKIM-Signature", txn.header)
        self.assertEqual(txn.auth_results, [])
