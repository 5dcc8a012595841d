"""resolvable_fromhost against a loopback twisted.names server."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT, Address
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.dns import start_dns_server

ZONE = {
    "mx.test": [("MX", (10, "mail.mx.test"))],
    "mail.mx.test": [("A", "192.0.2.25")],
    "a-only.test": [("A", "192.0.2.26")],
    "private.test": [("MX", (10, "lan.private.test"))],
    "lan.private.test": [("A", "10.1.2.3")],
    "nullmx.test": [("MX", (0, "."))],
    "dangling.test": [("MX", (10, "gone.dangling.test"))],
}


class ResolvableFromhostTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.dns.drop("slow.test")
        self.dns.servfail("broken.test")

    def mail(self, sender: str, line: str = "resolvable_fromhost", **fields: Any) -> Any:
        engine = make_engine([line], config=self.dns.config(timeout=0.3))
        txn = make_transaction(engine, make_connection(remote_ip="192.0.2.1", **fields))
        return run_hook(engine, "mail", txn, Address.parse(sender)).addCallback(lambda r: (r, txn))

    @defer.inlineCallbacks
    def test_mx_or_a_passes(self) -> Any:
        for sender in ("<a@mx.test>", "<a@A-ONLY.test>", "<>"):
            result, _ = yield self.mail(sender)
            self.assertEqual(result.code, DECLINED, sender)

    @defer.inlineCallbacks
    def test_unresolvable_domains_fail(self) -> Any:
        for domain in ("nowhere.test", "private.test", "nullmx.test", "dangling.test"):
            result, txn = yield self.mail(f"<a@{domain}>")
            self.assertEqual(result.code, DENYSOFT, domain)
            self.assertIn(domain, result.message)
            self.assertTrue(txn.notes["resolvable_fromhost"].startswith("fail"))
        result, _ = yield self.mail("<a@nowhere.test>", "resolvable_fromhost reject_type perm")
        self.assertEqual(result.code, DENY)

    @defer.inlineCallbacks
    def test_dns_trouble_is_temporary_even_with_perm(self) -> Any:
        for domain in ("slow.test", "broken.test"):
            result, txn = yield self.mail(f"<a@{domain}>", "resolvable_fromhost reject_type perm")
            self.assertEqual(result.code, DENYSOFT)
            self.assertTrue(txn.notes["resolvable_fromhost"].startswith("temperror"))

    @defer.inlineCallbacks
    def test_reject_zero_and_relay_clients(self) -> Any:
        self.assertEqual((yield self.mail("<a@nowhere.test>", "resolvable_fromhost reject 0"))[0].code,
                         DECLINED)
        self.assertEqual((yield self.mail("<a@nowhere.test>", relay_client=True))[0].code, DECLINED)
