"""helo: badhelo (names, regexes, negation), localhost, literals, plain IP, FQDN by policy."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from qptwisted import ConfigError
from qptwisted.testing import make_connection, make_engine, make_transaction
from tests.plugins.policy_support import MESSAGE, FakeResolver, codes, dialogue, queued

BADHELO = [
    "yahoo.com",
    r"^friend\.",
    r"!\.",
]


class HeloUnitTests(unittest.TestCase):
    def setUp(self) -> None:
        self.engine = make_engine(["helo policy rfc"], {"badhelo": BADHELO})
        self.helo: Any = self.engine.plugins[0]
        self.txn = make_transaction(self.engine, make_connection(remote_ip="192.0.2.1"))

    def test_badhelo(self) -> None:
        self.assertEqual(
            self.helo.is_in_badhelo(self.txn, "YAHOO.com"),
            ("I do not believe you are YAHOO.com.", "in badhelo"),
        )
        self.assertIsNotNone(self.helo.is_in_badhelo(self.txn, "friend.example.org"))
        self.assertIsNotNone(self.helo.is_in_badhelo(self.txn, "nodots"))  # negated pattern
        self.assertIsNone(self.helo.is_in_badhelo(self.txn, "mail.example.org"))

    def test_localhost(self) -> None:
        self.assertEqual(self.helo.invalid_localhost(self.txn, "localhost")[0], "You are not localhost")
        for ip in ("127.0.0.1", "::1"):
            txn = make_transaction(self.engine, make_connection(ip))
            self.assertIsNone(self.helo.invalid_localhost(txn, "localhost"), ip)

    def test_literals_and_ips(self) -> None:
        self.assertIsNone(self.helo.is_forged_literal(self.txn, "[192.0.2.1]"))
        self.assertEqual(
            self.helo.is_forged_literal(self.txn, "[192.0.2.99]")[0], "Forged IPs not accepted here"
        )
        v6 = make_transaction(self.engine, make_connection(remote_ip="2001:db8::1"))
        self.assertIsNone(self.helo.is_forged_literal(v6, "[IPv6:2001:db8:0::1]"))
        self.assertIsNotNone(self.helo.is_plain_ip(self.txn, "192.0.2.1"))
        self.assertIsNone(self.helo.is_plain_ip(self.txn, "[192.0.2.1]"))

    def test_fqdn(self) -> None:
        self.assertEqual(self.helo.is_not_fqdn(self.txn, "mailhost")[1], "not FQDN")
        self.assertEqual(self.helo.is_not_fqdn(self.txn, "mail_host.example.org")[1], "invalid FQDN chars")
        self.assertIsNone(self.helo.is_not_fqdn(self.txn, "[192.0.2.1]"))
        self.assertIsNone(self.helo.is_not_fqdn(self.txn, "mail.example.org"))


class HeloDialogueTests(unittest.TestCase):
    def test_lenient(self) -> None:
        smtp = dialogue(["helo"], {"badhelo": ["yahoo.com"]})
        self.assertEqual(smtp.send("EHLO yahoo.com"), [(550, "5.7.1", "I do not believe you are yahoo.com.")])
        self.assertEqual(smtp.send("HELO localhost"), [(550, "5.7.1", "You are not localhost")])
        self.assertEqual(smtp.send("HELO [10.0.0.1]"), [(550, "5.7.1", "Forged IPs not accepted here")])
        self.assertEqual(codes(smtp.send("HELO mailhost")), [250])

    def test_rfc_policy(self) -> None:
        smtp = dialogue(["helo policy rfc"])
        smtp.engine.resolver = FakeResolver(reverse={"192.0.2.1": ["client.example.org"]})
        self.assertEqual(
            smtp.send("EHLO 192.0.2.1"), [(550, "5.7.1", "Plain IP is invalid HELO hostname (RFC 2821)")]
        )
        self.assertEqual(smtp.send("EHLO mailhost")[0][2], "HELO name is not fully qualified. Read RFC 2821")
        self.assertEqual(codes(smtp.send("EHLO [192.0.2.1]")), [250])

    def test_reject_options(self) -> None:
        smtp = dialogue(["helo reject_type temp"], {"badhelo": ["yahoo.com"]})
        self.assertEqual(smtp.send("EHLO yahoo.com")[0][0], 450)
        smtp = dialogue(["helo reject 0"], {"badhelo": ["yahoo.com"]})
        self.assertEqual(codes(smtp.send("EHLO yahoo.com")), [250])

    def test_relay_client_is_immune_and_x_helo_added(self) -> None:
        smtp = dialogue(["relay", "helo"], {"relayclients": ["192.0.2.1"], "badhelo": ["yahoo.com"]})
        replies = smtp.deliver(
            "<a@example.org>", ["<bob@example.com>"], "X-HELO: forged\n" + MESSAGE, helo="yahoo.com"
        )
        self.assertEqual(codes(replies)[-1], 250)
        stored = queued(smtp.engine)[0]
        self.assertIn(b"X-HELO: yahoo.com\n", stored)
        self.assertNotIn(b"forged", stored)

    def test_bad_policy(self) -> None:
        self.assertRaises((ConfigError, ValueError), make_engine, ["helo policy paranoid"])


class HeloDNSTests(unittest.TestCase):
    """qpsmtpd's forward/reverse/matching DNS tests, against a fake resolver."""

    RESOLVER = {
        "forward": {"mail.example.org": ["192.0.2.1"], "other.example.net": ["198.51.100.9"],
                    "near.example.com": ["192.0.2.200"]},
        "reverse": {"192.0.2.1": ["mx1.example.org"]},
    }

    def ehlo(self, line: str, name: str, ip: str = "192.0.2.1", broken: tuple[str, ...] = ()) -> Any:
        smtp = dialogue([line], remote_ip=ip)
        smtp.engine.resolver = FakeResolver(self.RESOLVER["forward"], self.RESOLVER["reverse"], broken)
        return smtp.send(f"EHLO {name}")[0], smtp.session.connection.notes

    def test_rfc(self) -> None:
        reply, notes = self.ehlo("helo policy rfc", "mail.example.org")
        self.assertEqual(reply[0], 250)
        self.assertTrue(notes["helo_forward_match"] and notes["helo_reverse_match"])
        self.assertEqual(self.ehlo("helo policy rfc", "nowhere.example.org")[0],
                         (550, "5.7.1", "HELO hostname did not resolve"))
        self.assertEqual(self.ehlo("helo policy rfc", "other.example.net", ip="198.51.100.9")[0],
                         (550, "5.7.1", "no reverse DNS for 198.51.100.9"))

    def test_strict(self) -> None:
        reply, notes = self.ehlo("helo policy strict", "near.example.com")
        self.assertEqual(reply[0], 250)  # same /24
        self.assertTrue(notes["helo_forward_match"])
        self.assertNotIn("helo_reverse_match", notes)
        self.assertEqual(self.ehlo("helo policy strict", "other.example.net")[0],
                         (550, "5.7.1", "That HELO hostname fails FCrDNS"))
        self.assertEqual(self.ehlo("helo policy rfc", "other.example.net")[0][0], 250)

    def test_dns_errors_skip_the_test(self) -> None:
        reply, _ = self.ehlo("helo policy rfc", "nowhere.example.org", broken=("nowhere.example.org",))
        self.assertEqual(reply[0], 250)

    def test_lenient_does_no_lookups(self) -> None:
        self.assertEqual(self.ehlo("helo", "nowhere.example.org")[0][0], 250)
