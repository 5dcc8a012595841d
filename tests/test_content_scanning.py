"""Content scanning end to end: the real server in a subprocess with the real daemons.

* all four scanners and ``queue/quarantine`` in one chain in front of ``queue/maildir``;
* a 50 MB message streamed to clamd and to a milter while the server's peak
  RSS stays within a fixed ceiling (the message never enters its memory);
* a scan whose answer is held back does not stop the server from serving
  another session meanwhile (no scanner call blocks the reactor).
"""

from __future__ import annotations

import base64
import os
import shutil
import smtplib
import socket
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from qptwisted.testing import write_config
from qptwisted.testing.daemons import (
    EICAR,
    GTUBE,
    start_clamd,
    start_opendkim,
    start_rspamd,
    start_spamd,
)
from tests.plugins.scanner_support import dkim_key, dkim_verify, shared
from tests.test_e2e import PATIENCE, Server, wait_for
from tests.test_memory import peak_rss

#: how much the server's peak RSS may grow while a message of any size is scanned
CEILING = 20 * 1024 * 1024
SIZE = 50 * 1024 * 1024


def message(subject: str, body: bytes = b"Shall we have lunch on Friday?\r\n", extra: bytes = b"") -> bytes:
    name = subject.encode()
    return (b"From: alice@example.org\r\nTo: bob@localhost\r\nSubject: " + name + b"\r\n"
            b"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\nMessage-Id: <" + name + b"@example.org>\r\n"
            + extra + b"\r\n" + body)


def attachment(data: bytes) -> bytes:
    mime = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n"
    return message("attachment", extra=mime,
                   body=b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
                        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                        + base64.encodebytes(data).replace(b"\n", b"\r\n") + b"--b--\r\n")


class Base(unittest.TestCase):
    def workdir(self, plugins: list[str], **config: Any) -> Path:
        cwd = Path(tempfile.mkdtemp(prefix="qpt-scanning-"))
        self.addCleanup(shutil.rmtree, cwd, True)
        write_config(cwd / "config", {"me": "mx.test", "rcpthosts": "localhost", "loglevel": "LOGINFO",
                                      "spool_dir": str(cwd / "spool" / "tmp"), "plugins": plugins, **config})
        return cwd


class ChainTests(Base):
    def test_four_scanners_and_quarantine_in_front_of_maildir(self) -> None:
        key = dkim_key()[0]
        opendkim = shared("opendkim", start_opendkim, "example.org", key)
        spamd = shared("spamd", start_spamd)
        clamd = shared("clamd", start_clamd)
        rspamd = shared("rspamd", start_rspamd, dkim_domain="example.org", dkim_key=key)
        cwd = self.workdir([
            f"milter inet:{opendkim.port}@127.0.0.1",
            f"spamassassin spamd_socket {spamd.address} reject 10",
            f"virus/clamdscan clamd_socket {clamd.address} deny_viruses quarantine",
            f"rspamd rspamd_socket {rspamd.address} greylist no",
            "rcpt_ok",
            "queue/quarantine spool/quarantine",
            "queue/maildir spool/maildir",
        ])
        server = Server(self, cwd, ["--config", str(cwd / "config")])
        with server.smtp() as client:
            client.sendmail("alice@example.org", ["bob@localhost"], message("clean"))
            with self.assertRaises(smtplib.SMTPDataError) as refused:
                client.sendmail("alice@example.org", ["bob@localhost"],
                                message("spam", GTUBE + b"\r\n"))
            self.assertEqual(refused.exception.smtp_code, 550)
            self.assertIn(b"Message refused as spam", refused.exception.smtp_error)
            client.sendmail("alice@example.org", ["bob@localhost"], attachment(EICAR))
        [delivered] = server.delivered()
        header = delivered.partition(b"\n\n")[0].decode()
        self.assertIn("\nX-Spam-Status: No, score=", header)
        self.assertIn("\nX-Virus-Checked: Checked by ClamAV on mx.test\n", header)
        self.assertIn("\nX-Rspamd-Action: no action\n", header)
        self.assertIn("Subject: clean", header)
        self.assertEqual(header.count("DKIM-Signature: "), 2)  # OpenDKIM's (milter) and rspamd's
        self.assertTrue(dkim_verify(delivered.split(b"\n", 2)[2]))  # without Return-Path, Delivered-To
        [quarantined] = list((cwd / "spool" / "quarantine").glob("*/*.eml"))
        self.assertIn(b"Subject: attachment", quarantined.read_bytes())
        self.assertIn(b"X-Virus-Found: Qptwisted.Test.EICAR.UNOFFICIAL", quarantined.read_bytes())
        self.assertTrue(quarantined.with_suffix(".json").exists())


class MemoryTests(Base):
    def test_50_mb_message_streams_to_clamd_and_a_milter_under_a_fixed_ceiling(self) -> None:
        if not os.path.exists("/proc/self/status"):
            raise unittest.SkipTest("needs /proc to read the server's memory")
        clamd = shared("clamd-100M", start_clamd, "100M")
        opendkim = shared("opendkim", start_opendkim, "example.org", dkim_key()[0])
        cwd = self.workdir([f"milter inet:{opendkim.port}@127.0.0.1 timeout 120",
                            f"virus/clamdscan clamd_socket {clamd.address} max_size 100M timeout 300",
                            "rcpt_ok", "queue/maildir spool/maildir"], databytes="0")
        server = Server(self, cwd, ["--config", str(cwd / "config")])
        with server.smtp() as client:  # warm up: the first delivery loads what later ones share
            client.sendmail("alice@example.org", ["bob@localhost"], message("warm"))
        before = peak_rss(server.process.pid)
        line = b"x" * 76 + b"\r\n"
        body = line * (SIZE // len(line))
        with server.smtp() as client:
            client.sendmail("alice@example.org", ["bob@localhost"], message("big", body))
        after = peak_rss(server.process.pid)
        log = server.output()
        self.assertIn("[virus/clamdscan] clean", log)
        self.assertIn("[milter] accept at message", log)
        big = [path for path in (server.maildir / "new").iterdir() if path.stat().st_size > SIZE // 2]
        self.assertEqual(len(big), 1)
        self.assertIn(b"DKIM-Signature:", big[0].read_bytes()[:4096])
        self.assertLess(after - before, CEILING,
                        f"peak RSS grew by {(after - before) / 2**20:.1f} MiB while a "
                        f"{SIZE / 2**20:.0f} MiB message was scanned")


class HeldClamd:
    """A stand-in for clamd (zINSTREAM) that holds its answer to the first scan until released."""

    def __init__(self, case: unittest.TestCase) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.first_received = threading.Event()
        self.release = threading.Event()
        self.scans = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        case.addCleanup(self.stop)

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.scan, args=(connection,), daemon=True).start()

    def scan(self, connection: socket.socket) -> None:
        with connection:
            stream = connection.makefile("rb")
            if stream.read(10) != b"zINSTREAM\0":
                return
            while (length := struct.unpack("!I", stream.read(4))[0]) != 0:
                stream.read(length)
            self.scans += 1
            if self.scans == 1:
                self.first_received.set()
                self.release.wait(PATIENCE)
            connection.sendall(b"stream: OK\0")

    def stop(self) -> None:
        self.release.set()
        self.listener.close()


class ReactorTests(Base):
    def test_a_held_scan_does_not_stop_another_session(self) -> None:
        clamd = HeldClamd(self)
        cwd = self.workdir([f"virus/clamdscan clamd_socket 127.0.0.1:{clamd.port} timeout 120", "rcpt_ok",
                            "queue/maildir spool/maildir"])
        server = Server(self, cwd, ["--config", str(cwd / "config")])
        first: dict[str, Any] = {}

        def send_first() -> None:
            with server.smtp() as client:
                first["refused"] = client.sendmail("alice@example.org", ["bob@localhost"], message("first"))

        sender = threading.Thread(target=send_first, daemon=True)
        sender.start()
        self.assertTrue(clamd.first_received.wait(PATIENCE), "the first message never reached clamd")
        with server.smtp() as client:  # meanwhile: a whole second session, scanned and delivered
            self.assertEqual(client.sendmail("alice@example.org", ["bob@localhost"], message("second")), {})
        self.assertTrue(sender.is_alive())  # the first is still waiting for its scan
        self.assertEqual([b"Subject: second" in mail for mail in server.delivered()], [True])
        clamd.release.set()
        sender.join(PATIENCE)
        self.assertEqual(first, {"refused": {}})
        wait_for(lambda: len(server.delivered()) == 2, "the first message")


class DocsExampleTests(unittest.TestCase):
    """Every config/plugins line of docs/content-scanning.md loads (arguments valid, plugins found)."""

    def test_the_chain_and_every_example_line_load(self) -> None:
        import re

        from qptwisted.testing import make_engine

        docs = (Path(__file__).resolve().parent.parent / "docs" / "content-scanning.md").read_text()
        blocks = [body for language, body in re.findall(r"^```(\w*)\n(.*?)^```$", docs, re.S | re.M)
                  if not language]
        chain = next(block for block in blocks if "queue/quarantine spool/quarantine" in block)
        directory = tempfile.mkdtemp(prefix="qpt-docs-")
        self.addCleanup(shutil.rmtree, directory, True)
        engine = make_engine(chain.split("\n")[:-1], directory=directory)
        self.assertEqual(len(engine.plugins), 10)
        singles = [line for block in blocks for line in block.splitlines()
                   if re.match(r"(spamassassin|virus/clamdscan|rspamd|milter(:\d)?|queue/quarantine) ",
                               line)]
        self.assertEqual(len(singles), 11)
        for line in singles:
            make_engine([line.replace("/var/spool/qpsmtpd/quarantine", directory)], directory=directory)
