"""whitelist: notes for whitelisted hosts, HELO names, senders and recipients."""

from __future__ import annotations

import os

from twisted.trial import unittest

from qptwisted.mail.address import Address
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.policy_support import codes, dialogue

CONFIG = {
    "whitelisthosts": ["192.0.2.0/24", "10.", "2001:db8::/32"],
    "whitelisthelo": ["trusted.example.org"],
    "whitelistsenders": ["friend@example.org", "partner.test"],
    "whitelistrcpt": ["abuse@example.com"],
    "badmailfrom": ["@example.org"],
}


class WhitelistTests(unittest.TestCase):
    def test_whitelisted_host_is_immune_to_badmailfrom(self) -> None:
        smtp = dialogue(["whitelist", "badmailfrom"], CONFIG, remote_ip="192.0.2.77")
        smtp.send("EHLO x.test")
        self.assertEqual(codes(smtp.send("MAIL FROM:<anyone@example.org>")), [250])
        self.assertTrue(smtp.session.connection.notes["whitelisthost"])

    def test_ipv6_and_prefix_hosts(self) -> None:
        for ip, listed in (("2001:db8::5", True), ("10.1.2.3", True), ("198.51.100.1", False)):
            smtp = dialogue(["whitelist"], CONFIG, remote_ip=ip)
            self.assertEqual(bool(smtp.session.connection.notes.get("whitelisthost")), listed, ip)

    def test_helo_and_sender(self) -> None:
        smtp = dialogue(["whitelist", "badmailfrom"], CONFIG, remote_ip="198.51.100.1")
        smtp.send("EHLO x.test")
        self.assertEqual(smtp.send("MAIL FROM:<other@example.org>")[0][0], 550)
        self.assertEqual(codes(smtp.send("MAIL FROM:<friend@example.org>")), [250])
        self.assertTrue(smtp.session.transaction.notes["whitelistsender"])
        smtp = dialogue(["whitelist", "badmailfrom"], CONFIG, remote_ip="198.51.100.1")
        smtp.send("HELO Trusted.Example.org")
        self.assertEqual(codes(smtp.send("MAIL FROM:<other@example.org>")), [250])

    def test_sender_domain_and_recipient(self) -> None:
        engine = make_engine(["whitelist"], CONFIG)
        txn = make_transaction(engine)
        self.successResultOf(run_hook(engine, "mail", txn, Address.parse("<x@Partner.test>")))
        self.assertTrue(txn.notes["whitelistsender"])
        rcpt = Address.parse("<Abuse@example.com>")
        self.successResultOf(run_hook(engine, "rcpt", txn, rcpt))
        self.assertTrue(txn.notes["whitelistrcpt"])
        self.assertTrue(rcpt.notes["whitelistrcpt"])

    def test_environment(self) -> None:
        os.environ["WHITELISTCLIENT"] = "1"
        self.addCleanup(os.environ.pop, "WHITELISTCLIENT")
        smtp = dialogue(["whitelist"], {}, remote_ip="198.51.100.1")
        self.assertTrue(smtp.session.connection.notes["whitelistclient"])
