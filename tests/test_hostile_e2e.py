"""Hostile clients against the real server in a subprocess: memory measured from /proc, no timing asserted."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from twisted.trial import unittest

from qptwisted.testing import write_config
from tests.test_e2e import PATIENCE, Server, wait_for

#: how much the server may grow for one client, whatever it sends
CEILING = 20 * 1024 * 1024


def rss(pid: int) -> int:
    """VmRSS of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


class Base(unittest.TestCase):
    def start(self, **config: str) -> Server:
        if not os.path.exists("/proc/self/status"):
            raise unittest.SkipTest("needs /proc to read the server's memory")
        cwd = Path(tempfile.mkdtemp(prefix="qpt-hostile-"))
        self.addCleanup(shutil.rmtree, cwd, True)
        write_config(cwd / "config", {"me": "mx.test", "rcpthosts": "localhost", "loglevel": "LOGWARN",
                                      "plugins": ["rcpt_ok", "queue/maildir spool/maildir"], **config})
        return Server(self, cwd, ["--config", str(cwd / "config")])


class NeverReadingClientTests(Base):
    def test_pipelined_flood_without_reading_replies_costs_a_constant(self) -> None:
        # before: 1,000,000 MAIL FROM (33 MB) grew the server by 132 MB
        server = self.start(max_commands="0")
        # the start-up log says how many connections the open-file limit allows
        wait_for(lambda: "open-file limit" in server.output(), "the fd limit log line")
        self.assertRegex(server.output(), r"open-file limit \d+: up to \d+ connections at once \(derived\)")
        client = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
        self.addCleanup(client.close)
        client.recv(4096)  # the greeting
        client.sendall(b"EHLO flood.test\r\n")
        wait_for(lambda: b"250 " in client.recv(4096), "the EHLO reply")
        before = rss(server.process.pid)
        chunk = b"".join(b"MAIL FROM:<sender%07d@example.org>\r\n" % n for n in range(30_000))
        client.setblocking(False)
        sent, stuck_since = 0, None
        while sent < 1_000_000 * 33:
            try:
                sent += client.send(chunk)
                stuck_since = None
            except BlockingIOError:
                # the server stopped reading: the kernel buffers are full on both sides
                stuck_since = stuck_since or time.monotonic()
                if time.monotonic() - stuck_since > 2.0:
                    break
                time.sleep(0.01)
        grown = rss(server.process.pid) - before
        self.assertLess(sent, 1_000_000 * 33, "the server read everything: nothing held the client back")
        self.assertLess(grown, CEILING, f"the server grew by {grown / 2**20:.1f} MiB after "
                                        f"{sent / 2**20:.0f} MiB of commands whose replies were never read")
        # still alive and answering once the client reads
        client.setblocking(True)
        self.assertTrue(client.recv(65536).startswith(b"250"))


class SignalTests(Base):
    def test_sigterm_lets_a_transaction_in_data_finish_and_tells_idle_sessions(self) -> None:
        # before: SIGTERM cut transactions in DATA without a reply and sent no 421 to idle sessions
        server = self.start()
        busy = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
        self.addCleanup(busy.close)
        self.addCleanup(idle.close)
        for sock in (busy, idle):
            sock.recv(4096)
        busy.sendall(b"HELO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        wait_for(lambda: b"354" in busy.recv(4096), "the 354")
        busy.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
        server.signal(signal.SIGTERM)
        idle.settimeout(PATIENCE)
        self.assertTrue(idle.recv(4096).startswith(b"421 4.3.2"))
        busy.sendall(b"second half\r\n.\r\n")
        reply = busy.recv(4096)
        self.assertTrue(reply.startswith(b"250 2.6.0"), reply)
        [message] = server.delivered()
        self.assertIn(b"first half\nsecond half\n", message)
        wait_for(lambda: server.process.poll() is not None, "the server to exit after the drain")
        # twistd ends with the signal that stopped it, as a process killed by it would (systemd: success)
        self.assertIn(server.process.returncode, (0, -signal.SIGTERM))
