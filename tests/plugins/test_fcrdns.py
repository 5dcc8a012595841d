"""fcrdns against a loopback twisted.names server."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from qpplugins.fcrdns import is_fqdn, is_loopback
from qptwisted import DECLINED, DENY, DENYSOFT
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.dns import start_dns_server

ZONE = {
    "10.2.0.192.in-addr.arpa": [("PTR", "mail.example.org")],
    "mail.example.org": [("A", "192.0.2.10")],
    "11.2.0.192.in-addr.arpa": [("PTR", "liar.example.org")],
    "liar.example.org": [("A", "192.0.2.99")],
    "12.2.0.192.in-addr.arpa": [("PTR", "localhost")],
    "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa": [("PTR", "v6.example.org")],
    "v6.example.org": [("AAAA", "2001:db8::10")],
}


class HelperTests(unittest.TestCase):
    def test_fqdn_and_loopback(self) -> None:
        self.assertTrue(is_fqdn("mail.example.org"))
        self.assertFalse(is_fqdn("localhost"))
        self.assertTrue(is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1"))
        self.assertFalse(is_loopback("192.0.2.1"))


class FCrDNSTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.dns.drop("13.2.0.192.in-addr.arpa")
        self.dns.servfail("14.2.0.192.in-addr.arpa")

    def resolve_client(self, ip: str, line: str = "fcrdns") -> Any:
        engine = make_engine([line], config=self.dns.config(timeout=0.3))
        txn = make_transaction(engine, make_connection(ip))
        return run_hook(engine, "connect", txn).addCallback(lambda r: (r, txn.connection))

    @defer.inlineCallbacks
    def test_pass_ipv4_and_ipv6(self) -> Any:
        result, connection = yield self.resolve_client("192.0.2.10")
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(connection.auth_results, ["iprev=pass policy.iprev=192.0.2.10 (mail.example.org)"])
        self.assertEqual(connection.remote_host, "mail.example.org")
        _, connection = yield self.resolve_client("2001:db8::10")
        self.assertEqual(connection.notes["fcrdns"], ["v6.example.org"])

    @defer.inlineCallbacks
    def test_fail_no_ptr_not_confirmed_not_fqdn(self) -> Any:
        for ip in ("192.0.2.9", "192.0.2.11", "192.0.2.12"):
            result, connection = yield self.resolve_client(ip)
            self.assertEqual(result.code, DECLINED)
            self.assertEqual(connection.auth_results, [f"iprev=fail policy.iprev={ip}"])
        result, _ = yield self.resolve_client("192.0.2.11", "fcrdns reject 1 reject_type perm")
        self.assertEqual(result.code, DENY)

    @defer.inlineCallbacks
    def test_timeout_and_servfail_are_temperror(self) -> Any:
        for ip in ("192.0.2.13", "192.0.2.14"):
            result, connection = yield self.resolve_client(ip, "fcrdns reject 1 reject_type perm")
            self.assertEqual(result.code, DENYSOFT)
            self.assertEqual(connection.auth_results, [f"iprev=temperror policy.iprev={ip}"])

    @defer.inlineCallbacks
    def test_loopback_and_relay_clients_skip_lookups(self) -> Any:
        result, _ = yield self.resolve_client("127.0.0.1", "fcrdns reject 1")
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(self.dns.queries, [])
