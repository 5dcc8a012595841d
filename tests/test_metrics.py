"""Prometheus metrics: what is counted (in memory), and real scrapes after real deliveries.

The end-to-end tests run ``twistd qpsmtpd --metrics`` (one process, then
``--workers 2`` with a worker killed and replaced) and read ``/metrics`` over
HTTP with the library's own parser.
"""

from __future__ import annotations

import os
import signal
import smtplib
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT, HookAnswer, Plugin, Transaction
from qptwisted.mail.address import Address
from qptwisted.service.metrics import ENGINE, Metrics
from qptwisted.testing import make_engine
from qptwisted.testing.dns import start_dns_server
from tests.core_support import CaptureQueue, Dialogue
from tests.test_e2e import E2EBase, Server, free_port, message, wait_for


class Gate(Plugin):
    """Refuses recipients spam@ (550) and later@ (450), messages whose subject says reject or defer."""

    name = "test_gate"

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        if rcpt.user == "spam":
            return DENY, "no spam"
        if rcpt.user == "later":
            return DENYSOFT, "later"
        return DECLINED

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        subject = transaction.header.get("Subject") or ""
        if "reject" in subject:
            return DENY
        if "defer" in subject:
            return DENYSOFT
        return DECLINED


class CountingTests(unittest.TestCase):
    """The observer's arithmetic, on an in-memory dialogue."""

    def setUp(self) -> None:
        self.engine = make_engine([Gate, "rcpt_ok", CaptureQueue],
                                  config={"rcpthosts": "example.com", "databytes": "2000"})
        self.addCleanup(self.engine.close)
        self.metrics = Metrics(CollectorRegistry())
        self.engine.observer = self.metrics

    def value(self, name: str, **labels: str) -> float:
        found = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def test_connection_transactions_messages(self) -> None:
        smtp = Dialogue(self.engine)
        self.assertEqual(self.value("qpsmtpd_connections_open", listener="25"), 1)
        fine = smtp.deliver("<a@example.org>", ["<b@example.com>"], "Subject: fine\r\n\r\nhi\r\n")
        self.assertEqual(fine[-1][0], 250)
        smtp.send("MAIL FROM:<a@example.org>", "RCPT TO:<spam@example.com>", "RSET")
        smtp.deliver("<a@example.org>", ["<b@example.com>"], "Subject: please reject\r\n\r\nhi\r\n")
        smtp.deliver("<a@example.org>", ["<b@example.com>"], "Subject: please defer\r\n\r\nhi\r\n")
        big = smtp.deliver("<a@example.org>", ["<b@example.com>"],
                           "Subject: big\r\n\r\n" + ("x" * 60 + "\r\n") * 80)
        self.assertEqual(big[-1][0], 552)
        smtp.send("MAIL FROM:<a@example.org>", "RCPT TO:<later@example.com>", "RCPT TO:<b@example.com>",
                  "RSET")
        smtp.send("QUIT")
        smtp.close()

        queue = "test_capture_queue"
        self.assertEqual(self.value("qpsmtpd_messages_total", result="accepted", plugin=queue), 1)
        self.assertEqual(self.value("qpsmtpd_messages_total", result="refused", plugin="test_gate"), 1)
        self.assertEqual(self.value("qpsmtpd_messages_total", result="deferred", plugin="test_gate"), 1)
        self.assertEqual(self.value("qpsmtpd_messages_total", result="refused", plugin=ENGINE), 1)
        self.assertEqual(self.value("qpsmtpd_transactions_total", result="accepted", plugin=queue), 1)
        self.assertEqual(self.value("qpsmtpd_transactions_total", result="refused", plugin="test_gate"), 2)
        self.assertEqual(self.value("qpsmtpd_transactions_total", result="deferred", plugin="test_gate"), 2)
        self.assertEqual(self.value("qpsmtpd_transactions_total", result="refused", plugin=ENGINE), 1)
        self.assertEqual(self.value("qpsmtpd_transactions_total", result="abandoned", plugin=""), 0)
        self.assertEqual(self.value("qpsmtpd_plugin_verdicts_total", plugin="test_gate", hook="rcpt",
                                    verdict="deny"), 1)
        self.assertEqual(self.value("qpsmtpd_plugin_verdicts_total", plugin="rcpt_ok", hook="rcpt",
                                    verdict="ok"), 5)
        self.assertEqual(self.value("qpsmtpd_plugin_seconds_count", plugin="rcpt_ok", hook="rcpt"), 5)
        self.assertEqual(self.value("qpsmtpd_plugin_verdicts_total", plugin=queue, hook="queue",
                                    verdict="ok"), 1)
        self.assertEqual(self.value("qpsmtpd_plugin_seconds_count", plugin=queue, hook="queue"), 1)
        self.assertGreater(self.value("qpsmtpd_received_bytes_total"), 3 * len("Subject: fine\n\nhi\n"))
        self.assertEqual(self.value("qpsmtpd_connections_total", listener="25"), 1)
        self.assertEqual(self.value("qpsmtpd_connections_open", listener="25"), 0)
        self.assertEqual(self.value("qpsmtpd_connections_closed_total", listener="25", tls="no"), 1)

    def test_abandoned_transaction(self) -> None:
        smtp = Dialogue(self.engine)
        smtp.send("EHLO c.test", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>", "QUIT")
        smtp.close()
        self.assertEqual(self.value("qpsmtpd_transactions_total", result="abandoned", plugin=""), 1)

    def test_no_unbounded_labels(self) -> None:
        smtp = Dialogue(self.engine, remote_ip="198.51.100.7")
        smtp.deliver("<someone@example.org>", ["<b@example.com>"], "Subject: fine\r\n\r\nhi\r\n")
        smtp.close()
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                for value in sample.labels.values():
                    self.assertNotIn("198.51.100.7", value)
                    self.assertNotIn("example", value)

    @inlineCallbacks
    def test_dns_lookups(self) -> Any:
        dns = start_dns_server(self, {"there.test": [("A", "192.0.2.1")]})
        dns.drop("slow.test")
        engine = make_engine([], config={**dns.config(), "dns_timeout": "0.5"}, clock=reactor)
        self.addCleanup(engine.close)
        metrics = Metrics(CollectorRegistry())
        engine.observer = metrics
        resolver = engine.resolver
        yield resolver.lookup_a("there.test")
        yield resolver.lookup_a("missing.test")
        try:
            yield resolver.lookup_a("slow.test")
        except Exception:
            pass

        def value(**labels: str) -> Any:
            return metrics.registry.get_sample_value("qpsmtpd_dns_lookups_total", labels)

        self.assertEqual(value(type="A", result="ok"), 1)
        self.assertEqual(value(type="A", result="empty"), 1)
        self.assertEqual(value(type="A", result="timeout"), 1)
        self.assertEqual(metrics.registry.get_sample_value("qpsmtpd_dns_lookup_seconds_count", {"type": "A"}),
                         3)

    def test_scans_are_bounded(self) -> None:
        from qptwisted.core.observer import report_scan

        report_scan(self.engine, "clamav", "infected", 0.2)
        report_scan(self.engine, "clamav", "Eicar-Test-Signature", 0.1)
        self.assertEqual(self.value("qpsmtpd_scans_total", scanner="clamav", result="infected"), 1)
        self.assertEqual(self.value("qpsmtpd_scans_total", scanner="clamav", result="other"), 1)

    def test_latency_buckets_match_the_library(self) -> None:
        # the pending observations are added through the histogram child's _sum and _buckets
        timing = self.metrics.plugin_seconds.labels("p", "h")
        self.assertTrue(hasattr(timing, "_sum") and hasattr(timing, "_buckets"))
        for seconds in (0.0001, 0.0005, 0.003, 0.7, 100.0):
            self.metrics.hook_answered(None, "p", "h", DECLINED, seconds)
        reference = Metrics(CollectorRegistry())
        for seconds in (0.0001, 0.0005, 0.003, 0.7, 100.0):
            reference.plugin_seconds.labels("p", "h").observe(seconds)

        def buckets(metrics: Metrics) -> dict[str, float]:
            return {sample.labels["le"]: sample.value for family in metrics.registry.collect()
                    if family.name == "qpsmtpd_plugin_seconds" for sample in family.samples
                    if sample.name.endswith("_bucket")}

        self.assertEqual(buckets(self.metrics), buckets(reference))
        self.assertEqual(self.value("qpsmtpd_plugin_seconds_sum", plugin="p", hook="h"),
                         reference.registry.get_sample_value("qpsmtpd_plugin_seconds_sum", {"plugin": "p",
                                                                                            "hook": "h"}))

    def test_an_engine_without_observer_reports_nothing(self) -> None:
        engine = make_engine(["rcpt_ok", CaptureQueue], config={"rcpthosts": "example.com"})
        self.addCleanup(engine.close)
        self.assertIsNone(engine.observer)
        self.assertIsNone(engine.hooks.observer)
        smtp = Dialogue(engine)
        replies = smtp.deliver("<a@example.org>", ["<b@example.com>"], "Subject: x\r\n\r\nhi\r\n")
        self.assertEqual(replies[-1][0], 250)
        smtp.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as ``{(sample name, sorted labels): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def sample(samples: Mapping[Any, float], metric: str, /, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


class ScrapeTests(E2EBase):
    """The real server, real SMTP, a real HTTP scrape."""

    def deliver(self, server: Server, count: int, refused: int = 0) -> None:
        client = smtplib.SMTP("127.0.0.1", server.port, timeout=60)
        try:
            client.ehlo("client.test")
            for n in range(count):
                bounced = client.sendmail("alice@example.org", ["bob@localhost"], message(f"m{n}"))
                self.assertEqual(bounced, {})
            for _ in range(refused):
                client.mail("alice@example.org")
                self.assertEqual(client.rcpt("carol@elsewhere.example")[0], 550)
                client.rset()
        finally:
            client.quit()

    def test_single_process(self) -> None:
        cwd = self.workdir()
        port = free_port()
        server = Server(self, cwd, ["--config", str(self.config(cwd)), "--metrics", f"tcp:{port}"])
        self.deliver(server, 3, refused=2)
        samples = scrape(port)
        listener = str(server.port)
        self.assertEqual(sample(samples, "qpsmtpd_messages_total", result="accepted", plugin="queue/maildir"),
                         3)
        self.assertEqual(sample(samples, "qpsmtpd_transactions_total", result="refused", plugin="rcpt_ok"), 2)
        self.assertEqual(sample(samples, "qpsmtpd_plugin_verdicts_total", plugin="rcpt_ok", hook="rcpt",
                                verdict="deny"), 2)
        maildir = {"plugin": "queue/maildir", "hook": "queue"}
        self.assertEqual(sample(samples, "qpsmtpd_plugin_verdicts_total", verdict="ok", **maildir), 3)
        self.assertEqual(sample(samples, "qpsmtpd_plugin_seconds_count", **maildir), 3)
        # the test's connection, and the probe that waited for the port
        self.assertEqual(sample(samples, "qpsmtpd_connections_total", listener=listener), 2)
        self.assertEqual(sample(samples, "qpsmtpd_connections_closed_total", listener=listener, tls="no"), 2)
        self.assertGreater(sample(samples, "qpsmtpd_received_bytes_total"), 0)
        self.assertGreater(sample(samples, "process_resident_memory_bytes"), 0)
        self.assertIn(("qpsmtpd_threadpool_queue", ()), samples)
        self.assertFalse(any(name.endswith("_created") for name, _ in samples))

    def test_workers_sum_and_a_replaced_worker(self) -> None:
        cwd = self.workdir()
        port = free_port()
        directory = cwd / "metrics"
        directory.mkdir()
        (directory / "counter_99999999.db").write_bytes(b"")  # left by an earlier run: removed at start
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        try:
            server = Server(self, cwd, ["--config", str(self.config(cwd)), "--metrics", f"tcp:{port}",
                                        "--workers", "2"])
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        self.assertFalse((directory / "counter_99999999.db").exists())
        for _ in range(4):  # several connections: the kernel spreads them over the workers
            self.deliver(server, 2, refused=1)

        def accepted() -> float:
            return sample(scrape(port), "qpsmtpd_messages_total", result="accepted", plugin="queue/maildir")

        # a worker adds its counts to its files every second: the sum is at most that much behind
        wait_for(lambda: accepted() == 8, "the workers' counts to reach the master")
        samples = scrape(port)
        self.assertEqual(sample(samples, "qpsmtpd_workers"), 2)
        self.assertEqual(sample(samples, "qpsmtpd_connections_open", listener=str(server.port)), 0)
        workers = children(server.process.pid)
        self.assertEqual(len(workers), 2)
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        master = server.process.pid
        wait_for(lambda: victim not in children(master) and len(children(master)) == 2,
                 "the killed worker to be replaced")
        wait_for(lambda: sample(scrape(port), "qpsmtpd_worker_deaths_total") == 1, "the death to be counted")
        self.assertEqual(accepted(), 8)  # a counter never goes backwards when a worker dies
        self.assertFalse(list(directory.glob(f"*_{victim}.db")))  # folded into the archive
        self.assertTrue((directory / "counter_archive.db").exists())
        self.deliver(server, 1)
        wait_for(lambda: accepted() == 9, "the new message to be counted")


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)
