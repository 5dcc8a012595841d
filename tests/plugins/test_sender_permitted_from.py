"""sender_permitted_from (pyspf on the thread pool) against a loopback twisted.names server."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT, Address
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.dns import start_dns_server

ZONE = {
    "pass.test": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
    "fail.test": [("TXT", "v=spf1 -all")],
    "soft.test": [("TXT", "v=spf1 ~all")],
    "neutral.test": [("TXT", "v=spf1 ?all")],
    "perm.test": [("TXT", "v=spf1 bogus:mechanism -all")],
    "include.test": [("TXT", "v=spf1 include:pass.test -all")],
    "helo.test": [("TXT", "v=spf1 a -all"), ("A", "192.0.2.1")],
    "none.test": [("A", "192.0.2.1")],
}


class SPFTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.dns.servfail("temp.test")

    @defer.inlineCallbacks
    def check(self, sender: str, line: str = "sender_permitted_from reject 0", ip: str = "192.0.2.1",
              rcpt: str = "<bob@example.test>", **config: Any) -> Any:
        engine = make_engine([line], config={**self.dns.config(timeout=0.5), **config}, clock=reactor)
        txn = make_transaction(engine, make_connection(ip, hello="ehlo", hello_host="helo.test"))
        mail = yield run_hook(engine, "mail", txn, Address.parse(sender))
        self.assertEqual(mail.code, DECLINED)
        result = yield run_hook(engine, "rcpt", txn, Address.parse(rcpt, allow_postmaster=True))
        return txn, result

    @defer.inlineCallbacks
    def test_results(self) -> Any:
        expected = {"pass": "pass", "fail": "fail", "soft": "softfail", "neutral": "neutral",
                    "perm": "permerror", "temp": "temperror", "none": "none", "include": "pass"}
        for domain, result in expected.items():
            txn, rcpt = yield self.check(f"<a@{domain}.test>")
            self.assertEqual(txn.notes["spfquery"], result, domain)
            self.assertEqual(txn.auth_results, [f"spf={result} smtp.mailfrom=a@{domain}.test"])
            self.assertEqual(rcpt.code, DECLINED)

    @defer.inlineCallbacks
    def test_null_sender_checks_helo(self) -> Any:
        txn, _ = yield self.check("<>")
        self.assertEqual(txn.auth_results, ["spf=pass smtp.helo=helo.test"])
        self.assertEqual(txn.notes["spf"]["scope"], "helo")

    @defer.inlineCallbacks
    def test_reject_levels(self) -> Any:
        cases = [("1", "fail", DENY), ("1", "soft", DECLINED), ("2", "soft", DENYSOFT), ("3", "soft", DENY),
                 ("4", "neutral", DENYSOFT), ("5", "neutral", DENY), ("5", "temp", DECLINED),
                 ("6", "temp", DENYSOFT), ("6", "perm", DENY), ("6", "pass", DECLINED)]
        for level, domain, code in cases:
            _, rcpt = yield self.check(f"<a@{domain}.test>", f"sender_permitted_from reject {level}")
            self.assertEqual(rcpt.code, code, (level, domain))

    @defer.inlineCallbacks
    def test_spfbehavior_config_and_special_recipients(self) -> Any:
        _, rcpt = yield self.check("<a@fail.test>", "sender_permitted_from", spfbehavior="1")
        self.assertEqual(rcpt.code, DENY)
        self.assertIn("SPF fail", rcpt.message)
        _, rcpt = yield self.check("<a@fail.test>", "sender_permitted_from", rcpt="<postmaster>",
                                   spfbehavior="1")
        self.assertEqual(rcpt.code, DECLINED)

    @defer.inlineCallbacks
    def test_no_dmarc_policy_leaves_published_domains_to_dmarc(self) -> Any:
        self.dns.add("_dmarc.fail.test", "TXT", "v=DMARC1; p=reject")
        _, rcpt = yield self.check("<a@fail.test>", "sender_permitted_from reject 1 no_dmarc_policy 1")
        self.assertEqual(rcpt.code, DECLINED)
        _, rcpt = yield self.check("<a@soft.test>", "sender_permitted_from reject 3 no_dmarc_policy 1")
        self.assertEqual(rcpt.code, DENY)

    @defer.inlineCallbacks
    def test_received_spf_header_and_relay_clients(self) -> Any:
        engine = make_engine(["sender_permitted_from"], config=self.dns.config(), clock=reactor)
        txn2 = make_transaction(engine, make_connection(remote_ip="192.0.2.1", hello_host="helo.test"),
                                message=b"Subject: x\n\nbody\n")
        yield run_hook(engine, "mail", txn2, Address.parse("<a@pass.test>"))
        yield run_hook(engine, "data_post_headers", txn2)
        self.assertTrue(str(txn2.header["Received-SPF"]).startswith("Pass ("))
        relay = make_transaction(engine, make_connection(remote_ip="192.0.2.9", relay_client=True))
        yield run_hook(engine, "mail", relay, Address.parse("<a@fail.test>"))
        self.assertNotIn("spfquery", relay.notes)
