"""The resolver facade against a real twisted.names server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from qptwisted.lib.dns import (
    DNSServerFailure,
    DNSTimeout,
    Resolver,
    parse_server,
    reverse_name,
)
from qptwisted.testing import make_engine
from qptwisted.testing.dns import start_dns_server

ZONE = {
    "example.org": [("A", "192.0.2.10"), ("AAAA", "2001:db8::10"), ("MX", (20, "mx2.example.org")),
                    ("MX", (10, "mx1.example.org")), ("TXT", ("v=spf1 ", "-all"))],
    "10.2.0.192.in-addr.arpa": [("PTR", "host.example.org")],
    "2.0.0.127.zen.test": [("A", "127.0.0.2")],
    "alias.example.org": [("CNAME", "example.org")],
    "empty.example.org": [("MX", (0, "."))],
}


class ParsingTests(unittest.TestCase):
    def test_server_entries(self) -> None:
        self.assertEqual(parse_server("192.0.2.1"), ("192.0.2.1", 53))
        self.assertEqual(parse_server("192.0.2.1:5353"), ("192.0.2.1", 5353))
        self.assertEqual(parse_server("::1"), ("::1", 53))
        self.assertEqual(parse_server("[::1]:5353"), ("::1", 5353))
        self.assertRaises(ValueError, parse_server, "ns.example.org")

    def test_reverse_names(self) -> None:
        self.assertEqual(reverse_name("192.0.2.1"), "1.2.0.192")
        self.assertEqual(reverse_name("::ffff:192.0.2.1"), "1.2.0.192")
        self.assertTrue(reverse_name("2001:db8::1").endswith("8.b.d.0.1.0.0.2"))


class ResolverTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.dns.servfail("broken.example.org")
        self.dns.drop("slow.example.org")
        self.resolver = Resolver([("127.0.0.1", self.dns.port)], timeout=0.5)

    @defer.inlineCallbacks
    def test_record_types(self) -> Any:
        self.assertEqual((yield self.resolver.lookup_a("example.org")), ["192.0.2.10"])
        self.assertEqual((yield self.resolver.lookup_aaaa("example.org")), ["2001:db8::10"])
        self.assertEqual((yield self.resolver.lookup_ip("example.org")), ["192.0.2.10", "2001:db8::10"])
        self.assertEqual((yield self.resolver.lookup_mx("EXAMPLE.org")),
                         [(10, "mx1.example.org"), (20, "mx2.example.org")])
        self.assertEqual((yield self.resolver.lookup_txt("example.org")), ["v=spf1 -all"])
        self.assertEqual((yield self.resolver.lookup_ptr("192.0.2.10")), ["host.example.org"])

    @defer.inlineCallbacks
    def test_nxdomain_and_nodata_are_empty(self) -> Any:
        self.assertEqual((yield self.resolver.lookup_a("nowhere.example.org")), [])
        self.assertEqual((yield self.resolver.lookup_txt("empty.example.org")), [])
        self.assertEqual((yield self.resolver.lookup_a("bad..name")), [])

    @defer.inlineCallbacks
    def test_dnsbl_query(self) -> Any:
        self.assertEqual((yield self.resolver.dnsbl_query("127.0.0.2", "zen.test")), ["127.0.0.2"])
        self.assertEqual((yield self.resolver.dnsbl_query("127.0.0.3", "zen.test")), [])

    @defer.inlineCallbacks
    def test_servfail_is_a_server_failure(self) -> Any:
        with self.assertRaises(DNSServerFailure):
            yield self.resolver.lookup_a("broken.example.org")

    @defer.inlineCallbacks
    def test_no_answer_is_a_timeout(self) -> Any:
        with self.assertRaises(DNSTimeout):
            yield self.resolver.lookup_a("slow.example.org", timeout=0.2)

    @defer.inlineCallbacks
    def test_lookups_in_flight_are_bounded(self) -> Any:
        resolver = Resolver([("127.0.0.1", self.dns.port)], timeout=1, max_in_flight=2)
        lookups = [resolver.lookup_a(f"n{i}.example.org") for i in range(5)]
        self.assertLessEqual(resolver._semaphore.limit - resolver._semaphore.tokens, 2)
        self.assertEqual(len(resolver._semaphore.waiting), 3)
        yield defer.gatherResults(lookups)
        self.assertEqual(resolver._semaphore.tokens, 2)

    @defer.inlineCallbacks
    def test_engine_resolver_from_config(self) -> Any:
        engine = make_engine([], config=self.dns.config())
        self.assertEqual(engine.resolver.servers, [("127.0.0.1", self.dns.port)])
        self.assertIs(engine.resolver, engine.resolver)
        self.assertEqual((yield engine.resolver.lookup_a("example.org")), ["192.0.2.10"])

    @defer.inlineCallbacks
    def test_dnspython_uses_the_same_servers(self) -> Any:
        from twisted.internet.threads import deferToThread

        def blocking() -> list[str]:
            answer = self.resolver.dnspython().resolve("example.org", "TXT")
            return [b"".join(r.strings).decode() for r in answer]

        self.assertEqual((yield deferToThread(blocking)), ["v=spf1 -all"])
