"""dnsbl against a loopback twisted.names server: listed, not listed, timeout, SERVFAIL."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT, Address
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.dns import start_dns_server

ZONE = {
    "2.0.0.127.bl.test": [("A", "127.0.0.2"), ("TXT", "See http://bl.test/?127.0.0.2")],
    "3.0.0.127.bl.test": [("A", "127.0.0.4")],
    "2.0.0.127.other.test": [("A", "127.0.0.2")],
}


class DNSBLTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.dns.drop("2.0.0.127.slow.test")
        self.dns.servfail("2.0.0.127.broken.test")

    def engine(self, line: str = "dnsbl", zones: tuple[str, ...] = ("bl.test",), **config: Any) -> Any:
        return make_engine([line], config={**self.dns.config(timeout=0.3), "dnsbl_zones": list(zones),
                                           **config})

    @defer.inlineCallbacks
    def dialogue(self, engine: Any, ip: str, rcpt: str = "<bob@example.test>") -> Any:
        txn = make_transaction(engine, make_connection(ip), sender="<a@example.org>")
        connect = yield run_hook(engine, "connect", txn)
        rcpt_result = yield run_hook(engine, "rcpt", txn, Address.parse(rcpt, allow_postmaster=True))
        return connect, rcpt_result, txn

    @defer.inlineCallbacks
    def test_listed_is_refused_at_rcpt_with_the_txt_reason(self) -> Any:
        connect, rcpt, txn = yield self.dialogue(self.engine(), "127.0.0.2")
        self.assertEqual(connect.code, DECLINED)
        self.assertEqual(rcpt.code, DENY)
        self.assertEqual(rcpt.message, "See http://bl.test/?127.0.0.2")
        self.assertEqual(txn.connection.notes["dnsbl"], rcpt.message)

    @defer.inlineCallbacks
    def test_per_zone_message_and_rejectmsg(self) -> Any:
        engine = self.engine(zones=("bl.test Listed at %ZONE%: %IP%",), dnsbl_rejectmsg="Sorry.")
        _, rcpt, _ = yield self.dialogue(engine, "127.0.0.2")
        self.assertEqual(rcpt.message, "Sorry. Listed at bl.test: 127.0.0.2")

    @defer.inlineCallbacks
    def test_zone_with_answer_filter(self) -> Any:
        engine = self.engine(zones=("bl.test:127.0.0.2",))
        _, listed, _ = yield self.dialogue(engine, "127.0.0.2")
        self.assertEqual(listed.code, DENY)
        _, other, _ = yield self.dialogue(engine, "127.0.0.3")
        self.assertEqual(other.code, DECLINED)

    @defer.inlineCallbacks
    def test_not_listed(self) -> Any:
        connect, rcpt, txn = yield self.dialogue(self.engine(), "127.0.0.9")
        self.assertEqual((connect.code, rcpt.code), (DECLINED, DECLINED))
        self.assertNotIn("dnsbl", txn.connection.notes)

    @defer.inlineCallbacks
    def test_timeout_counts_as_not_listed(self) -> Any:
        _, rcpt, _ = yield self.dialogue(self.engine(zones=("slow.test",)), "127.0.0.2")
        self.assertEqual(rcpt.code, DECLINED)

    @defer.inlineCallbacks
    def test_servfail_counts_as_not_listed_and_other_zones_still_count(self) -> Any:
        _, alone, _ = yield self.dialogue(self.engine(zones=("broken.test",)), "127.0.0.2")
        self.assertEqual(alone.code, DECLINED)
        _, rcpt, _ = yield self.dialogue(self.engine(zones=("broken.test", "other.test")), "127.0.0.2")
        self.assertEqual((rcpt.code, rcpt.message), (DENY, "Blocked by other.test"))

    @defer.inlineCallbacks
    def test_postmaster_is_always_reachable(self) -> Any:
        _, rcpt, txn = yield self.dialogue(self.engine(), "127.0.0.2", "<postmaster@example.test>")
        self.assertEqual(rcpt.code, DECLINED)
        self.assertEqual((yield txn.connection.notes["dnsbl_pending"]), "See http://bl.test/?127.0.0.2")

    @defer.inlineCallbacks
    def test_reject_at_connect_and_reject_type(self) -> Any:
        engine = self.engine("dnsbl reject connect reject_type temp")
        txn = make_transaction(engine, make_connection(remote_ip="127.0.0.2"))
        result = yield run_hook(engine, "connect", txn)
        self.assertEqual(result.code, DENYSOFT)

    @defer.inlineCallbacks
    def test_old_single_argument_is_reject_type(self) -> Any:
        _, rcpt, _ = yield self.dialogue(self.engine("dnsbl temp"), "127.0.0.2")
        self.assertEqual(rcpt.code, DENYSOFT)

    @defer.inlineCallbacks
    def test_naughty_defers_the_refusal(self) -> Any:
        _, rcpt, txn = yield self.dialogue(self.engine("dnsbl reject naughty"), "127.0.0.2")
        self.assertEqual(rcpt.code, DECLINED)
        self.assertEqual(txn.connection.notes["naughty"], "See http://bl.test/?127.0.0.2")

    @defer.inlineCallbacks
    def test_allow_list_and_relay_clients_are_not_looked_up(self) -> Any:
        _, rcpt, _ = yield self.dialogue(self.engine(dnsbl_allow="127.0.0."), "127.0.0.2")
        self.assertEqual(rcpt.code, DECLINED)
        engine = self.engine()
        txn = make_transaction(engine, make_connection(remote_ip="127.0.0.2", relay_client=True))
        yield run_hook(engine, "connect", txn)
        self.assertEqual((yield run_hook(engine, "rcpt", txn, Address.parse("<b@x.test>"))).code, DECLINED)
        self.assertEqual(self.dns.queries, [])

    def test_rblsmtpd(self) -> None:
        engine = self.engine()
        self.patch(os, "environ", {"RBLSMTPD": "-You are blocked"})
        txn = make_transaction(engine, make_connection(remote_ip="127.0.0.9"))
        result = self.successResultOf(run_hook(engine, "connect", txn))
        self.assertEqual((result.code, result.message), (DENY, "You are blocked"))
        self.patch(os, "environ", {"RBLSMTPD": "try later"})
        result = self.successResultOf(run_hook(engine, "connect", txn))
        self.assertEqual((result.code, result.message), (DENYSOFT, "try later"))
        self.patch(os, "environ", {"RBLSMTPD": ""})
        txn = make_transaction(engine, make_connection(remote_ip="127.0.0.2"))
        self.assertEqual(self.successResultOf(run_hook(engine, "connect", txn)).code, DECLINED)
        self.assertEqual(txn.connection.notes["whitelisthost"], "RBLSMTPD")
        self.assertEqual(self.dns.queries, [])
