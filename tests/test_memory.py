"""Memory stays flat while large messages pass through: measured on the real server's /proc figures.

A 50 MB message goes through DATA (spooled to disk past ``size_threshold``)
and into ``queue/maildir``, which streams it from the spool in the delivery
thread. The server's peak resident size (VmHWM) may grow by a fixed
amount, never by the size of the message. No timing is asserted.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from twisted.trial import unittest

from qptwisted.testing import write_config
from tests.test_e2e import Server

#: how much the server's peak RSS may grow for one message of any size
CEILING = 20 * 1024 * 1024
SIZE = 50 * 1024 * 1024


def peak_rss(pid: int) -> int:
    """VmHWM of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


class LargeMessageMemoryTests(unittest.TestCase):
    def setUp(self) -> None:
        if not os.path.exists("/proc/self/status"):
            raise unittest.SkipTest("needs /proc to read the server's memory")
        self.cwd = Path(tempfile.mkdtemp(prefix="qpt-memory-"))
        self.addCleanup(lambda: __import__("shutil").rmtree(self.cwd, True))
        write_config(self.cwd / "config", {
            "me": "mx.test", "rcpthosts": "localhost", "databytes": "0", "loglevel": "LOGINFO",
            "spool_dir": str(self.cwd / "spool" / "tmp"),
            "plugins": ["rcpt_ok", "queue/maildir spool/maildir"],
        })

    def test_50_mb_message_into_maildir_under_a_fixed_ceiling(self) -> None:
        server = Server(self, self.cwd, ["--config", str(self.cwd / "config")])
        line = b"x" * 76 + b"\r\n"
        body = line * (SIZE // len(line))
        with server.smtp() as client:  # warm up: the first delivery loads what later ones share
            client.sendmail("a@example.org", ["bob@localhost"], b"Subject: warm\r\n\r\nhi\r\n")
        before = peak_rss(server.process.pid)
        with server.smtp() as client:
            client.sendmail("a@example.org", ["bob@localhost"], b"Subject: big\r\n\r\n" + body)
        after = peak_rss(server.process.pid)
        big = [path for path in (server.maildir / "new").iterdir() if path.stat().st_size > SIZE // 2]
        self.assertEqual(len(big), 1)
        self.assertGreater(big[0].stat().st_size, len(body) * 76 // 78)
        self.assertLess(after - before, CEILING,
                        f"peak RSS grew by {(after - before) / 2**20:.1f} MiB for a "
                        f"{SIZE / 2**20:.0f} MiB message")
