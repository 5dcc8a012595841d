"""The tools and modes beside the daemon: ``qpsmtpd check``, ``qpsmtpd inetd`` under real super-servers,
binding port 25 as root and running as another user, JSON log lines with their ids.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
from email.parser import BytesParser
from pathlib import Path

from twisted.trial import unittest

from qptwisted.lib.tls import make_self_signed
from qptwisted.service.check import check
from tests.test_e2e import PATIENCE, TWISTD, E2EBase, Server, free_port, message, wait_for

INETD = [sys.executable, "-m", "qptwisted.service.inetd"]


class CheckTests(E2EBase):
    def run_check(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = check(list(argv), out, err)
        return status, out.getvalue(), err.getvalue()

    def test_prints_the_chain_hook_by_hook(self) -> None:
        cwd = self.workdir()
        config = self.config(cwd, plugins="tls\nrelay\nrcpt_ok\nqueue/maildir spool/maildir\n",
                             tls_reload_interval="0\n")
        cert, key = make_self_signed(["mx.test"])
        (config / "ssl").mkdir()
        (config / "ssl" / "qpsmtpd-server.crt").write_bytes(cert)
        (config / "ssl" / "qpsmtpd-server.key").write_bytes(key)
        status, out, err = self.run_check("--config", str(config), "--port", "tcp:2525")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertIn("4 plugins", lines[0])
        # hooks in the order a session fires them; plugins in chain order; extra methods named
        self.assertEqual(lines[1:3], ["connect:", "  1. tls (implicit_tls)  timeout 120s"])
        self.assertEqual(lines[3], "  2. relay  timeout 120s")
        self.assertLess(lines.index("ehlo:"), lines.index("rcpt:"))
        rcpt = lines.index("rcpt:")
        self.assertEqual(lines[rcpt + 1 : rcpt + 3],
                         ["  1. relay  timeout 120s", "  2. rcpt_ok  timeout 120s"])
        self.assertLess(rcpt, lines.index("queue:"))
        self.assertEqual(lines[-1], "configuration OK")
        self.assertEqual(self.run_check("--config", str(config), "--quiet"), (0, "", ""))

    def test_errors_are_one_precise_line(self) -> None:
        cwd = self.workdir()
        config = self.config(cwd, plugins="rcpt_ok\nno_such_plugin arg\n")
        status, out, err = self.run_check("--config", str(config))
        self.assertEqual((status, out), (1, ""))
        self.assertIn("no_such_plugin", err)
        self.assertIn(f"{config / 'plugins'} line 2", err)
        (config / "plugins").write_text("dnsbl nonsense_argument=1\n")
        status, _, err = self.run_check("--config", str(config), "-q")
        self.assertEqual(status, 1)
        self.assertIn("dnsbl", err)
        self.assertEqual(len(err.strip().splitlines()), 1)
        self.assertNotIn("Traceback", err)
        (config / "plugins").write_text("rcpt_ok\n")
        status, _, err = self.run_check("--config", str(config), "--port", "tcp:notaport")
        self.assertEqual(status, 1)
        self.assertIn("tcp:notaport", err)
        status, _, err = self.run_check("--config", str(cwd / "missing"))
        self.assertEqual(status, 1)
        self.assertIn("not a config directory", err)

    def test_console_script(self) -> None:
        script = Path(sys.executable).with_name("qpsmtpd")
        if not script.exists():
            raise unittest.SkipTest("the qpsmtpd console script is not installed next to python")
        cwd = self.workdir()
        good = subprocess.run([str(script), "check", "--config", str(self.config(cwd))], capture_output=True,
                              text=True, timeout=PATIENCE)
        self.assertEqual(good.returncode, 0, good.stderr)
        self.assertIn("queue/maildir", good.stdout)
        (cwd / "etc" / "plugins").write_text("rcpt_ok\nbroken_one\n")
        bad = subprocess.run([str(script), "check", "--config", str(cwd / "etc")], capture_output=True,
                             text=True, timeout=PATIENCE)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("broken_one", bad.stderr)


class SuperServer:
    """A super-server (tcpserver, socat) on a free loopback port, stopped at cleanup."""

    def __init__(self, case: unittest.TestCase, argv: list[str], port: int, cwd: Path) -> None:
        self.port = port
        self.log = cwd / "superserver.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        case.addCleanup(self.stop)
        wait_for(self._listening, f"the super-server on port {port}")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"super-server exited: {self.log.read_text()}")
        # a connection would start a session: look at the listening sockets instead
        return f":{self.port:04X} 00000000:0000 0A" in Path("/proc/net/tcp").read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(PATIENCE)


class InetdTests(E2EBase):
    def inetd_config(self, cwd: Path, tls: bool = False) -> Path:
        plugins = ("tls\n" if tls else "") + "relay\nrcpt_ok\nqueue/maildir spool/maildir\n"
        config = self.config(cwd, plugins=plugins, tls_reload_interval="0\n")
        if tls:
            cert, key = make_self_signed(["mx.test"])
            (config / "ssl").mkdir()
            (config / "ssl" / "qpsmtpd-server.crt").write_bytes(cert)
            (config / "ssl" / "qpsmtpd-server.key").write_bytes(key)
        return config

    def delivered(self, cwd: Path) -> list[bytes]:
        new = cwd / "spool" / "maildir" / "new"
        return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []

    def test_under_tcpserver_with_starttls(self) -> None:
        tcpserver = shutil.which("tcpserver")
        if tcpserver is None:
            raise unittest.SkipTest("tcpserver is not installed (Debian package ucspi-tcp)")
        cwd = self.workdir()
        config = self.inetd_config(cwd, tls=True)
        port = free_port()
        SuperServer(self, [tcpserver, "-HRl0", "127.0.0.1", str(port), *INETD, "--config", str(config)],
                    port, cwd)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        for n in range(2):  # a process per connection: each one ends with its session
            client = smtplib.SMTP("127.0.0.1", port, timeout=PATIENCE)
            client.ehlo("client.test")
            self.assertTrue(client.has_extn("starttls"))
            client.starttls(context=context)
            client.ehlo("client.test")
            self.assertEqual(client.sendmail("alice@example.org", ["bob@localhost"], message(f"tcp{n}")), {})
            client.quit()
        raw = self.delivered(cwd)
        self.assertEqual(len(raw), 2)
        received = BytesParser().parsebytes(raw[0])["Received"]
        self.assertIn("(127.0.0.1)", received)
        self.assertIn("ESMTPS", received)

    def test_under_socat_socket_and_pipes(self) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise unittest.SkipTest("socat is not installed (Debian package socat)")
        cwd = self.workdir()
        config = self.inetd_config(cwd, tls=True)
        command = " ".join([*INETD, "--config", str(config)])
        for options in (",nofork", ""):  # the TCP socket itself, then a socket pair with SOCAT_* variables
            port = free_port()
            SuperServer(self, [socat, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                               f"EXEC:{command}{options}"], port, cwd)
            client = smtplib.SMTP("127.0.0.1", port, timeout=PATIENCE)
            client.ehlo("client.test")
            # STARTTLS needs the socket: offered with nofork, refused over the socket pair
            self.assertEqual(client.has_extn("starttls"), options == ",nofork")
            if not options:
                self.assertEqual(client.docmd("STARTTLS")[0], 454)
            refused = client.sendmail("alice@example.org", ["bob@localhost"], message(f"s{options}"))
            self.assertEqual(refused, {})
            self.assertEqual(client.rcpt("carol@elsewhere.example")[0], 503)  # no MAIL: the session goes on
            client.quit()
        raw = self.delivered(cwd)
        self.assertEqual(len(raw), 2)
        for one in raw:
            self.assertIn("(127.0.0.1)", BytesParser().parsebytes(one)["Received"])

    def test_broken_configuration_answers_421(self) -> None:
        cwd = self.workdir()
        config = self.config(cwd, plugins="no_such_plugin\n")
        left, right = socket.socketpair()
        with left, right:
            done = subprocess.run([*INETD, "--config", str(config)], stdin=right, stdout=right,
                                  stderr=subprocess.PIPE, timeout=PATIENCE)
            right.close()
            left.settimeout(PATIENCE)
            self.assertTrue(left.recv(100).startswith(b"421 "))
        self.assertEqual(done.returncode, 1)
        self.assertIn(b"no_such_plugin", done.stderr)


class PrivilegeTests(E2EBase):
    """twistd binds port 25 as root, then runs as ``--uid/--gid``."""

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise unittest.SkipTest("binding a privileged port needs root")
        try:
            self.user = pwd.getpwnam("nobody")
        except KeyError:
            raise unittest.SkipTest("no user nobody") from None

    def privileged_port(self) -> int:
        for port in range(1023, 600, -1):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise unittest.SkipTest("no free port below 1024")

    def start(self, *extra: str) -> tuple[Server, Path]:
        cwd = self.workdir()
        config = self.config(cwd)
        for path in (cwd, *cwd.rglob("*")):
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        port = self.privileged_port()
        command = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--uid", str(self.user.pw_uid), "--gid",
                   str(self.user.pw_gid), "qpsmtpd"]
        server = Server(self, cwd, ["--config", str(config), "--port", f"tcp:{port}:interface=127.0.0.1",
                                    *extra], command=command, wait=False)
        server.port = port
        server.wait_listening()
        return server, cwd

    def ids(self, pid: int) -> tuple[int, int]:
        status = Path(f"/proc/{pid}/status").read_text()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[2])
        gid = int(next(line for line in status.splitlines() if line.startswith("Gid:")).split()[2])
        return uid, gid

    def test_port_below_1024_then_nobody(self) -> None:
        server, cwd = self.start()
        self.assertEqual(self.ids(server.process.pid), (self.user.pw_uid, self.user.pw_gid))
        self.send(server, "dropped")
        [path] = list((server.maildir / "new").iterdir())
        self.assertEqual(path.stat().st_uid, self.user.pw_uid)
        self.assertDelivery(path.read_bytes(), "dropped")

    def test_workers_run_as_nobody(self) -> None:
        # the master starts its workers after dropping privileges: the interpreter must be theirs to run
        try:
            usable = subprocess.run([sys.executable, "-c", "import qptwisted"], user=self.user.pw_uid,
                                    group=self.user.pw_gid, extra_groups=[], capture_output=True,
                                    timeout=PATIENCE, cwd="/").returncode == 0
        except PermissionError:
            usable = False
        if not usable:
            raise unittest.SkipTest(f"{sys.executable} or qptwisted cannot be run by {self.user.pw_name} "
                                    "here")
        server, cwd = self.start("--workers", "2")
        from tests.test_metrics import children

        workers = wait_for(lambda: children(server.process.pid) if len(children(server.process.pid)) == 2
                           else None, "two workers")
        for pid in [server.process.pid, *workers]:  # type: ignore[misc]
            self.assertEqual(self.ids(pid), (self.user.pw_uid, self.user.pw_gid))
        self.send(server, "worker-dropped")
        self.assertEqual(len(server.delivered()), 1)


class JsonLogTests(E2EBase):
    def test_every_session_line_has_connection_and_transaction(self) -> None:
        cwd = self.workdir()
        config = self.config(cwd, logging="logging/json loglevel 7 log/qpsmtpd.json\n")
        server = Server(self, cwd, ["--config", str(config)])
        self.send(server, "json-one")
        client = server.smtp()
        client.mail("alice@example.org")
        client.rcpt("carol@elsewhere.example")
        client.quit()
        log = cwd / "log" / "qpsmtpd.json"
        wait_for(lambda: log.exists() and "queued message" in log.read_text(), "the queue line")
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        for line in lines:
            self.assertIn("conn", line)
            self.assertIn("txn", line)
        session = [line for line in lines if line.get("hook") or "queued" in line["msg"]
                   or line.get("plugin") in ("rcpt_ok", "queue/maildir")]
        self.assertTrue(session)
        for line in session:
            self.assertIsInstance(line["conn"], int, line)
            self.assertIsInstance(line["txn"], int, line)
        queued = next(line for line in lines if "queued message" in line["msg"])
        self.assertEqual(queued["ip"], "127.0.0.1")


class CurrentTransactionTests(unittest.TestCase):
    """Log lines of an ``async def`` hook after an ``await`` still belong to its transaction."""

    def test_async_hook_keeps_its_transaction_across_await(self) -> None:
        from twisted.internet.task import Clock, deferLater

        from qptwisted import DECLINED, Plugin
        from qptwisted.testing import make_engine
        from tests.core_support import Dialogue

        lines: list[tuple[object, str]] = []

        class Keep(Plugin):
            name = "test_keep_lines"

            def hook_logging(self, transaction: object, level: int, hook: object, plugin: object,
                             message: str) -> object:
                lines.append((transaction, message))
                return DECLINED

        clock = Clock()

        class Slow(Plugin):
            name = "test_slow"

            async def hook_rcpt(self, transaction: object, rcpt: object, **params: object) -> object:
                self.log(6, "before the wait")
                await deferLater(clock, 1.0, lambda: None)
                self.log(6, "after the wait")
                return DECLINED

        engine = make_engine([Keep, Slow, "rcpt_ok"], config={"rcpthosts": "example.com", "loglevel": "7"},
                             clock=clock)
        self.addCleanup(engine.close)
        first, second = Dialogue(engine), Dialogue(engine)
        first.send("EHLO a.test", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>")
        second.send("EHLO b.test", "MAIL FROM:<c@example.org>", "RCPT TO:<d@example.com>")
        clock.advance(1.0)  # both waits end; each line must name its own session's transaction
        owners: dict[str, list[object]] = {"before the wait": [], "after the wait": []}
        for transaction, text in lines:
            if text in owners:
                owners[text].append(transaction)
        self.assertEqual(owners["before the wait"], [first.session.transaction, second.session.transaction])
        self.assertEqual(owners["after the wait"], [first.session.transaction, second.session.transaction])

