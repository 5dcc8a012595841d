"""``bench/run --quick`` still works: a tiny load against qptwisted (+ smtp-sink) yields a table."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SkipTest, TestCase

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "run")


class BenchSmokeTests(TestCase):
    def test_quick_run_produces_a_table(self) -> None:
        if not shutil.which("smtp-source"):
            raise SkipTest("smtp-source (Postfix) is not installed; bench/setup installs it")
        if not os.path.exists("/proc/self/smaps_rollup"):
            raise SkipTest("needs Linux /proc")
        out = os.path.abspath(self.mktemp())
        servers = "qptwisted,smtp_sink" if shutil.which("smtp-sink") else "qptwisted"
        done = subprocess.run(
            [sys.executable, BENCH, "--quick", "--servers", servers,
             "--workloads", "k1_s10,idle1000,tls_resume", "--results-dir", out, "--no-update"],
            capture_output=True, text=True, timeout=300)
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        self.assertIn("| workload | server | median |", done.stdout)
        self.assertRegex(done.stdout, r"\| 1 KiB, 10 sessions \| qptwisted \| [\d,.]+ msg/s \|")
        [report] = glob.glob(os.path.join(out, "bench-*.json"))
        with open(report) as handle:
            data = json.load(handle)
        self.assertEqual(data["results"]["k1_s10"]["qptwisted"]["status"], "ok")
        self.assertEqual(data["results"]["idle1000"]["qptwisted"]["status"], "ok")
        # a number, not a claim: 50 sessions are too few for the PSS growth to be more than noise
        self.assertIsInstance(data["results"]["idle1000"]["qptwisted"]["rate"], float)
        resumed = data["results"]["tls_resume"]["qptwisted"]
        self.assertEqual(resumed["status"], "ok")
        self.assertGreater(resumed["resumed"], 0.9)  # each client thread offered its previous session back
        if servers != "qptwisted":
            self.assertEqual(data["results"]["k1_s10"]["smtp_sink"]["status"], "ok")
        self.assertTrue(os.path.exists(os.path.join(out, "latest.md")))
