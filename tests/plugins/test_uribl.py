"""uribl against a loopback twisted.names server."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from qpplugins.uribl import extract_hosts
from qptwisted import DECLINED, DENY, DENYSOFT
from qptwisted.testing import make_engine, make_transaction, run_hook
from qptwisted.testing.dns import start_dns_server

ZONE = {
    "spamvertised.example.uri.test": [("A", "127.0.0.2")],
    "refused.example.uri.test": [("A", "127.0.0.1")],
    "masked.example.uri.test": [("A", "127.0.0.4")],
    "2.0.0.127.uri.test": [("A", "127.0.0.2")],
}


def message(body: str, headers: str = "Subject: hi\n") -> bytes:
    return f"{headers}\n{body}".encode()


class ExtractTests(unittest.TestCase):
    def test_hosts(self) -> None:
        text = "see http://A.Example.org/x, www.shop.test and mailto:x@mail.test and http://127.0.0.2/"
        self.assertEqual(extract_hosts(text), ["a.example.org", "www.shop.test", "mail.test", "127.0.0.2"])


class URIBLTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.dns.drop("slow.example.uri.test")
        self.dns.servfail("broken.example.uri.test")

    def check(self, body: bytes, line: str = "uribl action deny", zones: tuple[str, ...] = ("uri.test",),
              **config: Any) -> Any:
        engine = make_engine([line], config={**self.dns.config(timeout=0.3), "uribl_zones": list(zones),
                                             **config})
        txn = make_transaction(engine, sender="<a@b.test>", message=body)
        return run_hook(engine, "data_post", txn).addCallback(lambda r: (r, txn))

    @defer.inlineCallbacks
    def test_listed_domain_in_body(self) -> Any:
        result, txn = yield self.check(message("Buy at http://www.spamvertised.example/now!\n"))
        self.assertEqual(result.code, DENY)
        self.assertIn("spamvertised.example", result.message)
        self.assertEqual(txn.notes["uribl"], [("spamvertised.example", "uri.test")])

    @defer.inlineCallbacks
    def test_quoted_printable_and_zone_actions(self) -> Any:
        body = message("Visit http://spamvertised.exa=\nmple/\n",
                       "Subject: hi\nContent-Transfer-Encoding: quoted-printable\n")
        result, _ = yield self.check(body, "uribl", ("uri.test denysoft",))
        self.assertEqual(result.code, DENYSOFT)
        result, txn = yield self.check(body, "uribl")
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(txn.header["X-URIBL"], "spamvertised.example listed in uri.test")

    @defer.inlineCallbacks
    def test_not_listed_refused_masked_and_whitelisted(self) -> Any:
        for body in ("http://clean.example/", "http://refused.example/"):
            self.assertEqual((yield self.check(message(body)))[0].code, DECLINED, body)
        masked = message("http://masked.example/")
        self.assertEqual((yield self.check(masked, zones=("uri.test 2,8",)))[0].code, DECLINED)
        self.assertEqual((yield self.check(masked, zones=("uri.test 4",)))[0].code, DENY)
        result, _ = yield self.check(message("http://spamvertised.example/"),
                                     uribl_whitelist_domains="spamvertised.example")
        self.assertEqual(result.code, DECLINED)

    @defer.inlineCallbacks
    def test_timeout_and_servfail_count_as_not_listed(self) -> Any:
        result, _ = yield self.check(message("http://slow.example/ http://broken.example/"))
        self.assertEqual(result.code, DECLINED)

    @defer.inlineCallbacks
    def test_ip_uris_with_checkip(self) -> Any:
        self.assertEqual((yield self.check(message("http://127.0.0.2/x")))[0].code, DECLINED)
        result, _ = yield self.check(message("http://127.0.0.2/x"), "uribl action deny checkip 1")
        self.assertEqual(result.code, DENY)
