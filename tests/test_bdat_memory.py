"""BDAT keeps memory flat: a 50 MB chunk is fed to the spool as it arrives, never held whole, and a
chunk announced past ``databytes`` is read and dropped without being kept. Measured on the real
server's /proc figures, as ``test_memory`` does for DATA; no timing is asserted."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

from twisted.trial import unittest

from qptwisted.testing import write_config
from tests.test_e2e import PATIENCE, Server
from tests.test_memory import CEILING, SIZE, peak_rss


class Client:
    """A raw SMTP client that reads one reply at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        self.reader = self.sock.makefile("rb")
        self.reply()

    def reply(self) -> bytes:
        lines = []
        while True:
            line = self.reader.readline()
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def chunk(self, body: bytes, piece: int = 1 << 20) -> bytes:
        self.sock.sendall(b"BDAT %d LAST\r\n" % len(body))
        view = memoryview(body)
        for start in range(0, len(body), piece):
            self.sock.sendall(view[start:start + piece])
        return self.reply()

    def close(self) -> None:
        self.command(b"QUIT")
        self.sock.close()


class BDATMemoryTests(unittest.TestCase):
    def setUp(self) -> None:
        if not os.path.exists("/proc/self/status"):
            raise unittest.SkipTest("needs /proc to read the server's memory")
        self.cwd = Path(tempfile.mkdtemp(prefix="qpt-bdat-memory-"))
        self.addCleanup(lambda: __import__("shutil").rmtree(self.cwd, True))

    def serve(self, databytes: int) -> Server:
        write_config(self.cwd / "config", {
            "me": "mx.test", "rcpthosts": "localhost", "databytes": str(databytes), "loglevel": "LOGINFO",
            "spool_dir": str(self.cwd / "spool" / "tmp"),
            "plugins": ["rcpt_ok", "queue/maildir spool/maildir"],
        })
        return Server(self, self.cwd, ["--config", str(self.cwd / "config")])

    def envelope(self, client: Client) -> None:
        client.command(b"EHLO client.test")
        self.assertTrue(client.command(b"MAIL FROM:<a@example.org>").startswith(b"250"))
        self.assertTrue(client.command(b"RCPT TO:<bob@localhost>").startswith(b"250"))

    def warm(self, server: Server) -> None:
        client = Client(server.port)
        self.envelope(client)
        self.assertTrue(client.chunk(b"Subject: warm\r\n\r\nhi\r\n").startswith(b"250"))
        client.close()

    def test_50_mb_chunk_into_maildir_under_a_fixed_ceiling(self) -> None:
        server = self.serve(0)
        self.warm(server)
        line = b"x" * 76 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * (SIZE // len(line))
        before = peak_rss(server.process.pid)
        client = Client(server.port)
        self.envelope(client)
        self.assertTrue(client.chunk(body).startswith(b"250 2.6.0"))
        client.close()
        after = peak_rss(server.process.pid)
        big = [path for path in (server.maildir / "new").iterdir() if path.stat().st_size > SIZE // 2]
        self.assertEqual(len(big), 1)
        self.assertLess(after - before, CEILING,
                        f"peak RSS grew by {(after - before) / 2**20:.1f} MiB for a 50 MiB chunk")

    def test_chunk_past_databytes_is_read_and_dropped_under_the_ceiling(self) -> None:
        server = self.serve(1 << 20)
        self.warm(server)
        before = peak_rss(server.process.pid)
        client = Client(server.port)
        self.envelope(client)
        self.assertTrue(client.chunk(b"y" * SIZE).startswith(b"552 5.3.4"))
        # the connection is still in step: the next command is read as a command
        self.assertTrue(client.command(b"NOOP").startswith(b"250"))
        client.close()
        after = peak_rss(server.process.pid)
        self.assertLess(after - before, CEILING)
        self.assertEqual([p for p in (server.maildir / "new").iterdir() if p.stat().st_size > 1000], [])
