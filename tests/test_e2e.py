"""End to end: the real server in a subprocess, driven by smtplib over loopback.

Each test starts ``twistd -n --pidfile= qpsmtpd`` (or the ``qpsmtpd``
console script) in a fresh temporary working directory on a free port of
127.0.0.1, waits for the port by polling connect, and kills the process in
cleanup. Waits are bounded; no assertion depends on how long anything took.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser
from pathlib import Path

from twisted.trial import unittest

import qptwisted.core.config
from tests.net_support import PATIENCE, free_port, wait_for

#: upper bound for anything we wait for; generous, since the machine may be busy
TWISTD = "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"
_PACKAGE = Path(qptwisted.__file__).resolve().parent
# the sample config: shipped inside the package when installed, config/ in a checkout
SAMPLE_CONFIG = next(path for path in (_PACKAGE / "default_config", _PACKAGE.parent / "config")
                     if (path / "plugins").is_file())


def message(token: str, sender: str = "alice@example.org", rcpt: str = "bob@localhost",
            body: str = "Hello.\r\n") -> bytes:
    return (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {token}\r\n"
            f"Message-Id: <{token}@example.org>\r\n\r\n{body}token={token}\r\n").encode()


class Server:
    """A server subprocess in its own working directory."""

    def __init__(self, case: unittest.TestCase, cwd: Path, args: list[str],
                 command: list[str] | None = None, wait: bool = True, listen_options: str = "") -> None:
        self.cwd = cwd
        self.port = free_port()
        self.stdout_path = cwd / "server.out"
        self.stderr_path = cwd / "server.err"
        argv = (command or [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "qpsmtpd"]) + args
        if not any(arg.startswith("--port") for arg in args):
            argv += ["--port", f"tcp:{self.port}:interface=127.0.0.1{listen_options}"]
        env = dict(os.environ)
        env.pop("RELAYCLIENT", None)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL, env=env)
        case.addCleanup(self.stop)
        if wait:
            self.wait_listening()

    def output(self) -> str:
        return (self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace"))

    def _accepts(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"server exited with {self.process.returncode}:\n{self.output()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        except OSError:
            return False
        return True

    def wait_listening(self) -> None:
        wait_for(self._accepts, f"the server to listen on port {self.port}")

    def smtp(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=PATIENCE)
        client.ehlo("client.test")
        return client

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(PATIENCE)

    @property
    def maildir(self) -> Path:
        return self.cwd / "spool" / "maildir"

    def delivered(self) -> list[bytes]:
        new = self.maildir / "new"
        return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []


class E2EBase(unittest.TestCase):
    def workdir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="qpt-e2e-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def config(self, cwd: Path, **files: str) -> Path:
        """A copy of the sample config in ``cwd/config``, with ``files`` replaced."""
        target = cwd / "etc"
        shutil.copytree(SAMPLE_CONFIG, target)
        for name, text in files.items():
            (target / name).write_text(text)
        return target

    def assertDelivery(self, raw: bytes, token: str, rcpt: str = "bob@localhost") -> None:
        parsed = BytesParser().parsebytes(raw)
        self.assertEqual(parsed["Return-Path"], "<alice@example.org>")
        self.assertEqual(parsed["Delivered-To"], rcpt)
        self.assertIn("(HELO client.test)", parsed["Received"])
        self.assertIn("127.0.0.1", parsed["Received"])
        self.assertIsNotNone(parsed["Authentication-Results"])
        self.assertEqual(parsed["Subject"], token)
        self.assertIn(f"token={token}".encode(), raw)
        # the stored message uses LF line endings and begins with the trace headers
        self.assertTrue(raw.startswith(b"Return-Path: <alice@example.org>\n"))

    def send(self, server: Server, token: str, rcpt: str = "bob@localhost") -> None:
        client = server.smtp()
        try:
            refused = client.sendmail("alice@example.org", [rcpt], message(token, rcpt=rcpt))
            self.assertEqual(refused, {})
        finally:
            client.quit()


class DeliveryTests(E2EBase):
    def test_twistd_delivers_to_maildir(self) -> None:
        cwd = self.workdir()
        server = Server(self, cwd, ["--config", str(self.config(cwd))])
        client = server.smtp()
        code, reply = client.mail("alice@example.org")
        self.assertEqual(code, 250)
        self.assertEqual(client.rcpt("bob@localhost")[0], 250)
        self.assertEqual(client.rcpt("carol@elsewhere.example")[0], 550)
        code, reply = client.data(message("first"))
        self.assertEqual(code, 250)
        self.assertIn(b"Queued! <first@example.org>", reply)
        client.quit()
        [raw] = server.delivered()
        self.assertDelivery(raw, "first")
        self.assertEqual(list((server.maildir / "tmp").iterdir()), [])

    def test_console_script(self) -> None:
        script = Path(sys.executable).with_name("qpsmtpd")
        if not script.exists():
            raise unittest.SkipTest("the qpsmtpd console script is not installed next to python")
        cwd = self.workdir()
        server = Server(self, cwd, ["--config", str(self.config(cwd))], command=[str(script)])
        self.send(server, "script")
        [raw] = server.delivered()
        self.assertDelivery(raw, "script")

    def test_embedded_sample_config_without_config_option(self) -> None:
        cwd = self.workdir()
        self.assertFalse((cwd / "config").exists())
        server = Server(self, cwd, [])
        self.send(server, "sample")
        [raw] = server.delivered()
        self.assertDelivery(raw, "sample")
        # the sample config was used: its plugin list is logged at start-up
        self.assertIn("queue/maildir", server.output())

    def test_200_concurrent_clients(self) -> None:
        cwd = self.workdir()
        server = Server(self, cwd, ["--config", str(self.config(cwd))], listen_options=":backlog=256")
        count = 200
        barrier = threading.Barrier(count)
        tokens = [uuid.uuid4().hex for _ in range(count)]

        def client(token: str) -> tuple[int, bytes]:
            smtp = server.smtp()
            try:
                barrier.wait(PATIENCE)  # all 200 connections are open at once
                smtp.mail("alice@example.org")
                smtp.rcpt("bob@localhost")
                return smtp.data(message(token))
            finally:
                smtp.close()

        with ThreadPoolExecutor(max_workers=count) as pool:
            replies = list(pool.map(client, tokens))
        self.assertEqual([code for code, *_ in replies], [250] * count)
        found: dict[str, int] = {}
        for raw in server.delivered():
            token = BytesParser().parsebytes(raw)["Subject"]
            found[token] = found.get(token, 0) + 1
        self.assertEqual(found, dict.fromkeys(tokens, 1))

    def test_disconnect_in_data_leaves_nothing(self) -> None:
        cwd = self.workdir()
        # a small threshold puts the partial body into a spool file we can watch
        server = Server(self, cwd, ["--config", str(self.config(cwd, size_threshold="1024\n"))])
        spool = cwd / "spool" / "tmp"
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
        reader = sock.makefile("rb")
        try:
            def expect(code: bytes) -> None:
                while True:
                    line = reader.readline()
                    self.assertTrue(line.startswith(code), line)
                    if line[3:4] != b"-":
                        return

            expect(b"220")
            for command, code in ((b"EHLO client.test", b"250"), (b"MAIL FROM:<alice@example.org>", b"250"),
                                  (b"RCPT TO:<bob@localhost>", b"250"), (b"DATA", b"354")):
                sock.sendall(command + b"\r\n")
                expect(code)
            sock.sendall(b"Subject: partial\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (b"y" * 70 + b"\r\n") * 200)
            wait_for(lambda: spool.is_dir() and any(spool.iterdir()), "the body to be spooled to disk")
        finally:
            reader.close()
            sock.close()
        wait_for(lambda: not any(spool.iterdir()), "the spool file to be removed after the disconnect")
        # the server is still fine, and only the later, complete message was queued
        self.send(server, "after")
        [raw] = server.delivered()
        self.assertDelivery(raw, "after")
        self.assertEqual(list((server.maildir / "tmp").iterdir()), [])
        self.assertEqual(list(spool.iterdir()), [])

    def test_250_survives_kill_9(self) -> None:
        cwd = self.workdir()
        server = Server(self, cwd, ["--config", str(self.config(cwd))])
        client = server.smtp()
        body = "".join(f"line {n:06d} of a message big enough to be spooled to a file\r\n"
                       for n in range(40000)) + "THE END\r\n"
        client.mail("alice@example.org")
        client.rcpt("bob@localhost")
        code, _ = client.data(message("durable", body=body))
        server.signal(signal.SIGKILL)  # no QUIT, no clean shutdown
        self.assertEqual(code, 250)
        self.assertEqual(server.process.wait(PATIENCE), -signal.SIGKILL)
        client.close()
        [raw] = server.delivered()
        self.assertDelivery(raw, "durable")
        self.assertIn(b"line 039999 of a message", raw)
        self.assertTrue(raw.endswith(b"THE END\ntoken=durable\n"))


class ReloadTests(E2EBase):
    def test_sighup_reload_new_connections_only(self) -> None:
        cwd = self.workdir()
        config = self.config(cwd, rcpthosts="old.example\n")
        server = Server(self, cwd, ["--config", str(config)])
        before = server.smtp()
        self.assertEqual(before.mail("alice@example.org")[0], 250)  # mid-transaction across the reload

        (config / "rcpthosts").write_text("new.example\n")
        server.signal(signal.SIGHUP)

        def reloaded() -> bool:
            probe = server.smtp()
            try:
                probe.mail("alice@example.org")
                return probe.rcpt("bob@new.example")[0] == 250
            finally:
                probe.close()

        wait_for(reloaded, "the reload to reach new connections")
        self.assertIn("reloaded", server.output())

        after = server.smtp()
        after.mail("alice@example.org")
        self.assertEqual(after.rcpt("bob@old.example")[0], 550)
        self.assertEqual(after.rcpt("bob@new.example")[0], 250)
        after.quit()

        # the connection opened before the reload still runs on the old config
        self.assertEqual(before.rcpt("bob@old.example")[0], 250)
        self.assertEqual(before.rcpt("bob@new.example")[0], 550)
        self.assertEqual(before.data(message("old-config", rcpt="bob@old.example"))[0], 250)
        before.quit()
        [raw] = server.delivered()
        self.assertDelivery(raw, "old-config", rcpt="bob@old.example")

    def test_sighup_with_broken_config_keeps_running_config(self) -> None:
        cwd = self.workdir()
        config = self.config(cwd)
        server = Server(self, cwd, ["--config", str(config)])
        plugins = (config / "plugins").read_text()
        (config / "plugins").write_text(plugins + "no_such_plugin_on_reload\n")
        server.signal(signal.SIGHUP)
        wait_for(lambda: "no_such_plugin_on_reload" in server.output(), "the failed reload to be logged")
        self.assertIn("reload failed", server.output())
        self.assertIsNone(server.process.poll())
        self.send(server, "still-running")
        [raw] = server.delivered()
        self.assertDelivery(raw, "still-running")


class StartupFailureTests(E2EBase):
    def test_missing_plugin_fails_startup_naming_it(self) -> None:
        cwd = self.workdir()
        config = self.config(cwd, plugins="# a comment\nrelay\nrcpt_ok\nno_such_plugin_xyz arg\n"
                                          "queue/maildir spool/maildir\n")
        server = Server(self, cwd, ["--config", str(config)], wait=False)
        returncode = server.process.wait(PATIENCE)
        output = server.output()
        self.assertNotEqual(returncode, 0)
        self.assertIn("no_such_plugin_xyz", server.stderr_path.read_text())
        self.assertIn("'no_such_plugin_xyz arg'", output)  # the offending line
        self.assertIn(str(config / "plugins"), output)
        self.assertNotIn("Traceback", output)
