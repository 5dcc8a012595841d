"""dns_whitelist_soft, and dnsbl trusting it, over a loopback twisted.names server."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from qptwisted import DECLINED, Address
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.dns import start_dns_server

ZONE = {"2.0.0.127.wl.test": [("A", "127.0.10.2")], "2.0.0.127.bl.test": [("A", "127.0.0.2")]}


class DNSWhitelistSoftTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.dns.drop("2.0.0.127.slow.test")
        self.dns.servfail("2.0.0.127.broken.test")

    @defer.inlineCallbacks
    def connect(self, ip: str, zones: tuple[str, ...] = ("wl.test",), plugins: tuple[str, ...] = ()) -> Any:
        engine = make_engine(["dns_whitelist_soft", *plugins],
                             config={**self.dns.config(timeout=0.3), "whitelist_zones": list(zones),
                                     "dnsbl_zones": "bl.test"})
        txn = make_transaction(engine, make_connection(ip), sender="<a@b.test>")
        yield run_hook(engine, "connect", txn)
        rcpt = yield run_hook(engine, "rcpt", txn, Address.parse("<c@d.test>"))
        return txn, rcpt

    @defer.inlineCallbacks
    def test_listed_client_is_whitelisted_and_dnsbl_trusts_it(self) -> Any:
        txn, rcpt = yield self.connect("127.0.0.2", plugins=("dnsbl",))
        self.assertEqual(txn.connection.notes["whitelisthost"], "wl.test")
        self.assertTrue(txn.notes["whitelistsender"])
        self.assertEqual(rcpt.code, DECLINED)
        self.assertNotIn(("2.0.0.127.bl.test", "A"), self.dns.queries)

    @defer.inlineCallbacks
    def test_not_listed_timeout_servfail_and_answer_filter(self) -> Any:
        for ip, zones in (("127.0.0.3", ("wl.test",)), ("127.0.0.2", ("slow.test", "broken.test")),
                          ("127.0.0.2", ("wl.test:127.0.10.3",))):
            txn, _ = yield self.connect(ip, zones)
            self.assertNotIn("whitelisthost", txn.connection.notes, (ip, zones))
