"""rhsbl against a loopback twisted.names server."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT, Address
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.dns import start_dns_server

ZONE = {
    "spammer.example.rhs.test": [("A", "127.0.0.2"), ("TXT", "spammer.example is listed")],
    "helo-spammer.example.rhs.test": [("A", "127.0.0.2")],
}


class RHSBLTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.dns.drop("slow.example.rhs.test")
        self.dns.servfail("broken.example.rhs.test")

    def mail(self, sender: str, line: str = "rhsbl", zones: tuple[str, ...] = ("rhs.test",),
             helo: str = "client.test", **fields: Any) -> Any:
        engine = make_engine([line], config={**self.dns.config(timeout=0.3), "rhsbl_zones": list(zones)})
        txn = make_transaction(engine, make_connection(remote_ip="192.0.2.1", hello_host=helo, **fields))
        return run_hook(engine, "mail", txn, Address.parse(sender)).addCallback(lambda r: (r, txn))

    @defer.inlineCallbacks
    def test_listed_sender_domain(self) -> Any:
        result, txn = yield self.mail("<a@spammer.example>")
        self.assertEqual((result.code, result.message), (DENY, "spammer.example is listed"))
        self.assertEqual(txn.notes["rhsbl"], result.message)

    @defer.inlineCallbacks
    def test_zone_message_and_reject_type(self) -> Any:
        result, _ = yield self.mail("<a@spammer.example>", "rhsbl reject_type temp",
                                    ("rhs.test %DOMAIN% is in %ZONE%",))
        self.assertEqual((result.code, result.message), (DENYSOFT, "spammer.example is in rhs.test"))

    @defer.inlineCallbacks
    def test_not_listed_null_sender_and_relay_client(self) -> Any:
        self.assertEqual((yield self.mail("<a@good.example>"))[0].code, DECLINED)
        self.assertEqual((yield self.mail("<>"))[0].code, DECLINED)
        self.assertEqual((yield self.mail("<a@spammer.example>", relay_client=True))[0].code, DECLINED)

    @defer.inlineCallbacks
    def test_helo_checked_on_request(self) -> Any:
        self.assertEqual((yield self.mail("<a@good.example>", helo="helo-spammer.example"))[0].code, DECLINED)
        result, _ = yield self.mail("<a@good.example>", "rhsbl check_helo 1", helo="helo-spammer.example")
        self.assertEqual(result.code, DENY)
        self.assertIn("helo-spammer.example", result.message)

    @defer.inlineCallbacks
    def test_timeout_and_servfail_count_as_not_listed(self) -> Any:
        self.assertEqual((yield self.mail("<a@slow.example>"))[0].code, DECLINED)
        self.assertEqual((yield self.mail("<a@broken.example>"))[0].code, DECLINED)
