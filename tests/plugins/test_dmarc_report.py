"""dmarc_report: results collected after dmarc, RFC 7489 aggregate reports handed to a real queue plugin."""

from __future__ import annotations

import email
import email.policy
import gzip
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import Address, ConfigError, Engine
from qptwisted.lib.dmarc_report import Report, Row, aggregate_xml, rua_addresses
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.dns import start_dns_server
from tests.plugins.dkim_support import MESSAGE, keypair, sign

ZONE = {
    "example.org": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
    "_dmarc.example.org": [("TXT", "v=DMARC1; p=reject; adkim=s; rua=mailto:dmarc@example.org!10m")],
    "sel._domainkey.example.org": [("TXT", keypair()[1])],
    "_dmarc.ext.test": [("TXT", "v=DMARC1; p=none; rua=mailto:r@reports.test,https://x.test/")],
    "ext.test._report._dmarc.reports.test": [("TXT", "v=DMARC1")],
    "_dmarc.noauth.test": [("TXT", "v=DMARC1; p=quarantine; rua=mailto:r@reports.test")],
    "_dmarc.quiet.test": [("TXT", "v=DMARC1; p=reject")],
}
HOUR = 3600


class DMARCReportTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.maildir = Path(self.mktemp()).resolve()

    def engine(self, extra: str = "check_every 1000h") -> Engine:
        engine = make_engine(["sender_permitted_from reject 0", "dkim", "dmarc reject 0",
                              f"dmarc_report interval 1h org_name Example email dmarc-reports@mx.test "
                              f"queue queue/maildir db_dir {self.maildir.parent / 'db'} {extra}",
                              f"queue/maildir {self.maildir}"],
                             config={**self.dns.config(timeout=0.5), "me": "mx.test"}, clock=reactor)
        self.addCleanup(engine.close)
        return engine

    @defer.inlineCallbacks
    def receive(self, engine: Engine, message: bytes, ip: str = "192.0.2.1",
                sender: str = "<alice@example.org>") -> Any:
        txn = make_transaction(engine, make_connection(ip, hello_host="client.test"),
                               recipients=["<bob@example.test>"], message=message)
        yield run_hook(engine, "mail", txn, Address.parse(sender))
        yield run_hook(engine, "data_post_headers", txn)
        return txn

    def reports(self) -> list[Any]:
        new = self.maildir / "new"
        messages = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                    for p in sorted(new.iterdir())] if new.is_dir() else []
        return messages

    def feedback(self, message: Any) -> ET.Element:
        [attachment] = list(message.iter_attachments())
        self.assertEqual(attachment.get_content_type(), "application/gzip")
        return ET.fromstring(gzip.decompress(attachment.get_content()))

    @defer.inlineCallbacks
    def test_report_of_a_period(self) -> Any:
        engine = self.engine()
        plugin: Any = engine.plugin("dmarc_report")
        yield self.receive(engine, sign(MESSAGE))
        yield self.receive(engine, sign(MESSAGE))
        forged = sign(MESSAGE).replace(b"Hello Bob", b"Hello Eve")
        yield self.receive(engine, forged, ip="198.51.100.7")
        yield self.receive(engine, MESSAGE.replace(b"alice@example.org", b"a@quiet.test"))  # no rua: nothing
        begin = plugin.period_of(reactor.seconds())
        yield plugin.send_due(begin + HOUR - 1)
        self.assertEqual(self.reports(), [])  # the period has not ended
        yield plugin.send_due(begin + HOUR)
        [message] = self.reports()
        self.assertEqual(message["To"], "dmarc@example.org")
        self.assertEqual(message["From"], "dmarc-reports@mx.test")
        self.assertEqual(message["Subject"], "Report Domain: example.org Submitter: mx.test "
                                             f"Report-ID: <mx.test.example.org.{begin}>")
        [attachment] = list(message.iter_attachments())
        self.assertEqual(attachment.get_filename(), f"mx.test!example.org!{begin}!{begin + HOUR - 1}.xml.gz")
        root = self.feedback(message)
        self.assertEqual(root.findtext("report_metadata/org_name"), "Example")
        self.assertEqual(root.findtext("report_metadata/date_range/begin"), str(begin))
        published = [root.findtext(f"policy_published/{tag}") for tag in ("domain", "adkim", "p", "pct")]
        self.assertEqual(published, ["example.org", "s", "reject", "100"])
        records = {r.findtext("row/source_ip"): r for r in root.findall("record")}
        good, bad = records["192.0.2.1"], records["198.51.100.7"]
        self.assertEqual(good.findtext("row/count"), "2")
        self.assertEqual([good.findtext(f"row/policy_evaluated/{t}") for t in ("disposition", "dkim", "spf")],
                         ["none", "pass", "pass"])
        self.assertEqual([good.findtext(f"auth_results/dkim/{t}") for t in ("domain", "selector", "result")],
                         ["example.org", "sel", "pass"])
        self.assertEqual([good.findtext(f"auth_results/spf/{t}") for t in ("domain", "scope", "result")],
                         ["example.org", "mfrom", "pass"])
        self.assertEqual(good.findtext("identifiers/header_from"), "example.org")
        self.assertEqual(good.findtext("identifiers/envelope_to"), "example.test")
        self.assertEqual([bad.findtext(f"row/policy_evaluated/{t}") for t in ("disposition", "dkim", "spf")],
                         ["reject", "fail", "fail"])
        # sent once: the records are gone
        yield plugin.send_due(begin + 2 * HOUR)
        self.assertEqual(len(self.reports()), 1)

    @defer.inlineCallbacks
    def test_external_rua_needs_the_domains_consent(self) -> Any:
        engine = self.engine()
        plugin: Any = engine.plugin("dmarc_report")
        yield self.receive(engine, MESSAGE.replace(b"alice@example.org", b"a@ext.test"))
        yield self.receive(engine, MESSAGE.replace(b"alice@example.org", b"a@noauth.test"))
        yield plugin.send_due(reactor.seconds() + HOUR)
        [message] = self.reports()
        self.assertEqual(message["To"], "r@reports.test")
        self.assertEqual(self.feedback(message).findtext("policy_published/domain"), "ext.test")

    def test_timer_sends_and_a_failed_handoff_is_retried(self) -> None:
        # the dmarc note as the dmarc plugin leaves it; the engine's clock drives the timer
        clock = Clock()
        clock.advance(1000 * HOUR)
        engine = make_engine([f"dmarc_report interval 1h check_every 10m queue queue/maildir "
                              f"db_dir {self.maildir.parent / 'db'}", f"queue/maildir {self.maildir}"],
                             config={"me": "mx.test"}, clock=clock)
        self.addCleanup(engine.close)
        txn = make_transaction(engine, make_connection(remote_ip="192.0.2.1"),
                               recipients=["<bob@example.test>"])
        txn.notes["dmarc"] = {"result": "pass", "domain": "example.org", "policy_domain": "example.org",
                              "disposition": "none", "dkim_aligned": True, "spf_aligned": False,
                              "record": {"v": "DMARC1", "p": "none", "rua": "mailto:d@example.org"}}
        self.successResultOf(run_hook(engine, "data_post_headers", txn))
        plugin: Any = engine.plugin("dmarc_report")
        self.patch(plugin, "queue", "queue/none")  # no such queue: the hand-off fails
        clock.advance(HOUR)
        self.assertEqual(self.reports(), [])
        self.patch(plugin, "queue", "queue/maildir")
        clock.advance(600)
        [message] = self.reports()
        root = self.feedback(message)
        self.assertEqual(root.findtext("record/row/policy_evaluated/spf"), "fail")
        self.assertIsNone(root.find("record/auth_results/spf"))

    def test_arguments(self) -> None:
        with self.assertRaises(ConfigError):
            make_engine(["dmarc_report interval 10"])


class FormatTests(unittest.TestCase):
    def test_rua_addresses(self) -> None:
        self.assertEqual(rua_addresses("mailto:a@b.test!10m, mailto:c%40x@d.test?subject=x,https://e.test/"),
                         ["a@b.test", "c@x@d.test"])

    def test_xml_is_well_formed_and_escaped(self) -> None:
        row = Row("192.0.2.1", "a&b.test", "none", "pass", "fail")
        xml = aggregate_xml(Report("O<rg", "r@x.test", "id", 0, 59, "a&b.test", {"p": "none"}, [(row, 3)]))
        root = ET.fromstring(xml)
        self.assertEqual(root.findtext("report_metadata/org_name"), "O<rg")
        self.assertEqual(root.findtext("record/row/count"), "3")
        self.assertEqual(root.findtext("policy_published/sp"), "none")
