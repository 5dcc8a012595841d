"""dmarc after sender_permitted_from and dkim, over a loopback DNS server."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, Address
from qptwisted.lib.dmarc import aligned, organizational_domain, parse_record
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.dns import start_dns_server
from tests.plugins.dkim_support import MESSAGE, keypair, sign

ZONE = {
    "example.org": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
    "_dmarc.example.org": [("TXT", "v=DMARC1; p=reject; rua=mailto:d@example.org")],
    "sel._domainkey.example.org": [("TXT", keypair()[1])],
    "mail.example.org": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
    "_dmarc.reject.test": [("TXT", "v=DMARC1; p=reject; sp=quarantine; aspf=s")],
    "reject.test": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
    "_dmarc.none.test": [("TXT", "v=DMARC1; p=none")],
}


class HelperTests(unittest.TestCase):
    def test_organizational_domain_and_alignment(self) -> None:
        self.assertEqual(organizational_domain("a.b.example.co.uk"), "example.co.uk")
        self.assertEqual(organizational_domain("mail.example.org"), "example.org")
        self.assertTrue(aligned("mail.example.org", "example.org", "r"))
        self.assertFalse(aligned("mail.example.org", "example.org", "s"))
        self.assertFalse(aligned("example.co.uk", "other.co.uk", "r"))

    def test_parse_record(self) -> None:
        self.assertEqual(parse_record("v=DMARC1; p=reject; pct=50")["pct"], "50")
        self.assertIsNone(parse_record("v=spf1 -all"))
        self.assertIsNone(parse_record("p=reject; v=DMARC1"))


class DMARCTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.dns.servfail("_dmarc.broken.test")

    @defer.inlineCallbacks
    def deliver(self, message: bytes, sender: str = "<alice@example.org>", ip: str = "192.0.2.1",
                dmarc: str = "dmarc") -> Any:
        engine = make_engine(["sender_permitted_from reject 0", "dkim", dmarc],
                             config=self.dns.config(timeout=0.5), clock=reactor)
        txn = make_transaction(engine, make_connection(ip, hello_host="client.test"), message=message)
        yield run_hook(engine, "mail", txn, Address.parse(sender))
        yield run_hook(engine, "data_post_headers", txn)
        post = yield run_hook(engine, "data_post", txn)
        return txn, post

    def dmarc_result(self, txn: Any) -> str:
        return [r for r in txn.auth_results if r.startswith("dmarc=")][0]

    @defer.inlineCallbacks
    def test_pass_by_aligned_dkim_although_spf_fails(self) -> Any:
        txn, post = yield self.deliver(sign(MESSAGE), ip="198.51.100.7")
        self.assertEqual(txn.notes["spfquery"], "fail")
        self.assertEqual(self.dmarc_result(txn), "dmarc=pass (p=reject dis=none) header.from=example.org")
        self.assertTrue(txn.notes["dmarc"]["dkim_aligned"])
        self.assertEqual(post.code, DECLINED)

    @defer.inlineCallbacks
    def test_pass_by_relaxed_spf_alignment(self) -> Any:
        txn, post = yield self.deliver(MESSAGE, sender="<bounce@mail.example.org>")
        self.assertTrue(self.dmarc_result(txn).startswith("dmarc=pass"))
        self.assertTrue(txn.notes["dmarc"]["spf_aligned"])

    @defer.inlineCallbacks
    def test_p_reject_failing_is_refused(self) -> Any:
        forged = sign(MESSAGE).replace(b"Hello Bob", b"Hello Eve")
        txn, post = yield self.deliver(forged, ip="198.51.100.7")
        self.assertEqual(self.dmarc_result(txn), "dmarc=fail (p=reject dis=reject) header.from=example.org")
        self.assertEqual((post.code, post.message), (DENY, "failed DMARC policy of example.org"))
        txn, post = yield self.deliver(forged, ip="198.51.100.7", dmarc="dmarc reject 0")
        self.assertEqual(post.code, DECLINED)

    @defer.inlineCallbacks
    def test_strict_spf_and_subdomain_policy(self) -> Any:
        message = MESSAGE.replace(b"alice@example.org", b"alice@sub.reject.test")
        txn, post = yield self.deliver(message, sender="<alice@reject.test>")
        self.assertEqual(self.dmarc_result(txn),
                         "dmarc=fail (p=quarantine dis=quarantine) header.from=sub.reject.test")
        self.assertEqual(post.code, DECLINED)
        self.assertEqual(txn.header["X-DMARC-Quarantine"], "yes")

    @defer.inlineCallbacks
    def test_p_none_and_no_policy(self) -> Any:
        txn, post = yield self.deliver(MESSAGE.replace(b"alice@example.org", b"alice@none.test"))
        self.assertEqual(self.dmarc_result(txn), "dmarc=fail (p=none dis=none) header.from=none.test")
        self.assertEqual(post.code, DECLINED)
        txn, post = yield self.deliver(MESSAGE.replace(b"alice@example.org", b"alice@nopolicy.test"))
        self.assertEqual(self.dmarc_result(txn), "dmarc=none header.from=nopolicy.test")

    @defer.inlineCallbacks
    def test_temperror_and_missing_from(self) -> Any:
        txn, post = yield self.deliver(MESSAGE.replace(b"alice@example.org", b"alice@broken.test"))
        self.assertEqual(self.dmarc_result(txn), "dmarc=temperror header.from=broken.test")
        self.assertEqual(post.code, DECLINED)
        txn, post = yield self.deliver(b"Subject: no from\n\nbody\n")
        self.assertEqual(post.code, DENY)
        self.assertIn("no From header", post.message)
