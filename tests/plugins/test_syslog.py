"""logging/syslog against syslog sockets the test opens: Unix datagram, UDP and TCP."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import syslog
import tempfile
from contextlib import redirect_stderr
from pathlib import Path

from twisted.trial import unittest

from qptwisted import LOGDEBUG, LOGINFO, ConfigError
from qptwisted.mail.address import Address
from tests.core_support import Dialogue
from tests.plugins.policy_support import engine

HEADER = re.compile(r"<(\d+)>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (\S+ )?(\S+)\[(\d+)\]: (.*)\Z", re.S)


def parse(datagram: bytes) -> tuple[int, str | None, str, int, str]:
    """(priority, hostname, ident, pid, text) of one RFC 3164 line."""
    match = HEADER.match(datagram.decode())
    assert match is not None, datagram
    host = match.group(3)
    return int(match.group(1)), host.strip() if host else None, match.group(4), int(match.group(5)), \
        match.group(6)


class UnixSocketTests(unittest.TestCase):
    def setUp(self) -> None:
        # a short directory: a Unix socket path must fit in about 100 bytes
        directory = tempfile.mkdtemp(prefix="qpt-syslog-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = str(Path(directory) / "log")
        self.server = self.listen()

    def listen(self) -> socket.socket:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(self.path)
        server.settimeout(10)
        self.addCleanup(server.close)
        return server

    def engine(self, arguments: str) -> object:
        eng = engine([f"logging/syslog logsock {self.path} {arguments}"])
        self.addCleanup(eng.close)
        return eng

    def test_levels_priority_facility_ident(self) -> None:
        eng = self.engine("loglevel 6 facility local3 ident test")
        eng.log(LOGINFO, "hello", plugin="p")  # type: ignore[attr-defined]
        eng.log(LOGDEBUG, "hidden")  # type: ignore[attr-defined]
        eng.log(LOGINFO, "second line")  # type: ignore[attr-defined]
        priority, host, ident, pid, text = parse(self.server.recv(4096))
        self.assertEqual(priority, syslog.LOG_INFO | syslog.LOG_LOCAL3)
        self.assertIsNone(host)  # the local daemon adds the host name itself
        self.assertEqual((ident, pid, text), ("test", os.getpid(), "INFO p: hello"))
        self.assertEqual(parse(self.server.recv(4096))[4], "INFO second line")  # the debug line was not sent

    def test_fixed_priority(self) -> None:
        eng = self.engine("priority LOG_WARNING")
        eng.log(0, "urgent")  # type: ignore[attr-defined]
        priority, _, ident, _, text = parse(self.server.recv(4096))
        self.assertEqual(priority, syslog.LOG_WARNING | syslog.LOG_MAIL)
        self.assertEqual((ident, text), ("qpsmtpd", "EMERG urgent"))

    def test_no_nul_and_one_line(self) -> None:
        eng = self.engine("loglevel 6")
        eng.log(LOGINFO, "first\nsecond\n")  # type: ignore[attr-defined]
        datagram = self.server.recv(4096)
        self.assertNotIn(b"\0", datagram)
        self.assertTrue(datagram.endswith(b"INFO first | second"), datagram)

    def test_session_lines_carry_the_connection(self) -> None:
        eng = self.engine("loglevel 7")
        smtp = Dialogue(eng)
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>", "DATA")
        smtp.send("Subject: x\r\n\r\nbody\r\n.")
        lines = []
        self.server.settimeout(0.5)
        try:
            while True:
                lines.append(parse(self.server.recv(4096))[4])
        except TimeoutError:
            pass
        self.assertTrue(any("queued message from <a@example.org>" in line for line in lines), lines)

    def test_daemon_restart_and_absence(self) -> None:
        eng = self.engine("loglevel 6")
        eng.log(LOGINFO, "before")  # type: ignore[attr-defined]
        self.assertIn(b"before", self.server.recv(4096))
        self.server.close()
        os.unlink(self.path)
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            eng.log(LOGINFO, "while away")  # type: ignore[attr-defined]
            eng.log(LOGINFO, "still away")  # type: ignore[attr-defined]
        self.assertEqual(stderr.getvalue().count("cannot send to"), 1, stderr.getvalue())
        self.assertIn("INFO while away", stderr.getvalue())
        self.assertIn("INFO still away", stderr.getvalue())
        self.server = self.listen()  # the daemon is back: the next line reconnects
        with redirect_stderr(io.StringIO()):
            eng.log(LOGINFO, "after")  # type: ignore[attr-defined]
        self.assertIn(b"INFO after", self.server.recv(4096))

    def test_bad_arguments(self) -> None:
        self.assertRaises((ConfigError, ValueError), engine, ["logging/syslog facility nowhere"])
        self.assertRaises((ConfigError, ValueError), engine, ["logging/syslog loglevel"])
        self.assertRaises((ConfigError, ValueError), engine, ["logging/syslog logsock udp:nowhere"])


class NetworkTests(unittest.TestCase):
    def test_udp(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        eng = engine([f"logging/syslog logsock udp:127.0.0.1:{server.getsockname()[1]} facility local0 "
                      "loglevel 6"])
        self.addCleanup(eng.close)
        eng.log(LOGINFO, "over udp")
        priority, host, ident, _, text = parse(server.recv(4096))
        self.assertEqual(priority, syslog.LOG_INFO | syslog.LOG_LOCAL0)
        self.assertEqual(host, socket.gethostname().split(".")[0])  # a remote daemon needs our name
        self.assertEqual((ident, text), ("qpsmtpd", "INFO over udp"))

    def test_tcp_lines_are_framed(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(10)
        eng = engine([f"logging/syslog logsock tcp:127.0.0.1:{server.getsockname()[1]} loglevel 6"])
        self.addCleanup(eng.close)
        peer, _ = server.accept()
        self.addCleanup(peer.close)
        peer.settimeout(10)
        eng.log(LOGINFO, "one")
        eng.log(LOGINFO, "two")
        received = b""
        while received.count(b"\n") < 2:
            received += peer.recv(4096)
        lines = received.split(b"\n")[:2]
        self.assertEqual([parse(line)[4] for line in lines], ["INFO one", "INFO two"])


class AddressTests(unittest.TestCase):
    def test_qpsmtpd_words(self) -> None:
        from qpplugins.logging.syslog import destination

        self.assertEqual(destination(None), ("/dev/log", None))
        self.assertEqual(destination("native"), ("/dev/log", None))
        self.assertEqual(destination("inet"), (("127.0.0.1", 514), socket.SOCK_DGRAM))
        self.assertEqual(destination("tcp:[::1]:601"), (("::1", 601), socket.SOCK_STREAM))
        self.assertEqual(Address.parse("<a@b.test>").address, "a@b.test")
