"""systemd: the sample units pass ``systemd-analyze verify``; socket activation and sd_notify for real.

Socket activation runs the server under ``systemd-socket-activate`` (which
binds 127.0.0.1 and hands the socket over as systemd does), one process and
``--workers 2``. The notification socket is a datagram socket the test
opens and names in ``$NOTIFY_SOCKET``: the server must say READY once it
listens, RELOADING and READY around a SIGHUP, STOPPING on SIGTERM, and ping
the watchdog when ``$WATCHDOG_USEC`` asks for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial import unittest

from qptwisted.service import notify
from tests.test_e2e import PATIENCE, TWISTD, E2EBase, Server, free_port, wait_for

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "systemd"
ACTIVATE = shutil.which("systemd-socket-activate")


class UnitFileTests(unittest.TestCase):
    def setUp(self) -> None:
        if shutil.which("systemd-analyze") is None:
            raise unittest.SkipTest("systemd-analyze is not installed (Debian package systemd)")

    def test_units_verify(self) -> None:
        script = Path(sys.executable).with_name("qpsmtpd")
        executable = str(script) if script.exists() else shutil.which("true")
        assert executable is not None
        for directory in (CONTRIB, CONTRIB / "socket-activated"):
            units = sorted(p for p in directory.iterdir() if p.suffix in (".service", ".socket"))
            self.assertTrue(units, directory)
            work = Path(tempfile.mkdtemp(prefix="qpt-units-"))
            self.addCleanup(shutil.rmtree, work, True)
            for unit in units:  # the command must exist where the unit says; here it is our script
                (work / unit.name).write_text(unit.read_text().replace("/usr/bin/qpsmtpd", executable))
            done = subprocess.run(["systemd-analyze", "verify", *(f"./{u.name}" for u in units)], cwd=work,
                                  capture_output=True, text=True, timeout=120)
            self.assertEqual((done.returncode, done.stderr.strip(), done.stdout.strip()), (0, "", ""),
                             f"systemd-analyze verify in {directory.name}")

    def test_hardening_and_reload_check(self) -> None:
        unit = (CONTRIB / "qpsmtpd.service").read_text()
        for line in ("Type=notify", "ProtectSystem=strict", "NoNewPrivileges=yes",
                     "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                     "ExecReload=/usr/bin/qpsmtpd check --quiet --config /etc/qpsmtpd",
                     "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=30", "KillMode=mixed"):
            self.assertIn(f"\n{line}\n", unit)
        activated = (CONTRIB / "socket-activated" / "qpsmtpd.service").read_text()
        self.assertIn("--port systemd:domain=INET6:name=smtp", activated)
        self.assertIn("\nCapabilityBoundingSet=\n", activated)


class NotifySocket:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, case: unittest.TestCase) -> None:
        directory = tempfile.mkdtemp(prefix="qpt-notify-")
        case.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        case.addCleanup(self.sock.close)
        self.received: list[str] = []

    def drain(self) -> list[str]:
        """What arrived so far (the watchdog never stops talking: read only what is there)."""
        try:
            while True:
                self.received.extend(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            pass
        return self.received

    def wait(self, line: str, count: int = 1) -> None:
        wait_for(lambda: self.drain().count(line) >= count, f"{line!r} x{count} on the notify socket")


class ActivationTests(E2EBase):
    def setUp(self) -> None:
        if ACTIVATE is None:
            raise unittest.SkipTest("systemd-socket-activate is not installed (Debian package systemd)")

    def start(self, cwd: Path, *extra: str, env: dict[str, str] | None = None,
              endpoint: str = "systemd:domain=INET:index=0") -> Server:
        port = free_port()
        # systemd names every socket it hands over (LISTEN_FDNAMES); this tool only when asked.
        # It passes on only the variables given with -E.
        variables = [f"-E{key}={value}" for key, value in {"PYTHONUNBUFFERED": "1", **(env or {})}.items()]
        command = [ACTIVATE, "-l", f"127.0.0.1:{port}", "--fdname=smtp", *variables, sys.executable, "-c",
                   TWISTD, "-n", "--pidfile=", "qpsmtpd"]
        server = Server(self, cwd, ["--config", str(self.config(cwd)), "--port", endpoint, *extra],
                        command=command, wait=False)
        server.port = port
        server.wait_listening()
        return server

    def test_socket_activation_delivers(self) -> None:
        cwd = self.workdir()
        server = self.start(cwd)
        self.send(server, "activated")
        [raw] = server.delivered()
        self.assertDelivery(raw, "activated")

    def test_socket_activation_with_workers(self) -> None:
        cwd = self.workdir()
        server = self.start(cwd, "--workers", "2", endpoint="systemd:domain=INET:name=smtp")
        for n in range(3):
            self.send(server, f"worker-{n}")
        self.assertEqual(len(server.delivered()), 3)

    def test_notify_ready_reloading_stopping_watchdog(self) -> None:
        cwd = self.workdir()
        sink = NotifySocket(self)
        server = self.start(cwd, env={"NOTIFY_SOCKET": sink.path, "WATCHDOG_USEC": "200000"})
        sink.wait("READY=1")
        self.assertEqual([line for line in sink.received if line.startswith("STATUS=")][:1],
                         ["STATUS=accepting mail"])
        sink.wait("WATCHDOG=1", 3)  # every 0.1 s while the reactor runs
        server.signal(signal.SIGHUP)
        sink.wait("RELOADING=1")
        sink.wait("READY=1", 2)
        self.assertTrue(any(line.startswith("MONOTONIC_USEC=") for line in sink.received))
        self.send(server, "after-reload")
        server.signal(signal.SIGTERM)
        sink.wait("STOPPING=1")
        # twistd ends a clean stop by SIGTERM with that signal, so systemd sees how it stopped
        self.assertIn(server.process.wait(PATIENCE), (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down", server.output())
        order = [line for line in sink.received if line in ("READY=1", "RELOADING=1", "STOPPING=1")]
        self.assertEqual(order, ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"])


class NotifyUnitTests(unittest.TestCase):
    def test_without_socket_nothing_happens(self) -> None:
        self.assertFalse(notify.notify("READY=1", environ={}))
        self.assertIsNone(notify.watchdog_interval({}))
        self.assertIsNone(notify.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}))
        self.assertEqual(notify.watchdog_interval({"WATCHDOG_USEC": "1000000"}), 0.5)

    def test_abstract_socket_name(self) -> None:
        name = f"qpt-notify-{os.getpid()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind("\0" + name)
        sock.settimeout(10)
        self.assertTrue(notify.notify("READY=1", "STATUS=up", environ={"NOTIFY_SOCKET": "@" + name}))
        self.assertEqual(sock.recv(100), b"READY=1\nSTATUS=up")

    def test_workers_do_not_inherit_the_socket(self) -> None:
        env = notify.clean_environment({"NOTIFY_SOCKET": "/run/x", "LISTEN_FDS": "1", "PATH": "/bin"})
        self.assertEqual(env, {"PATH": "/bin"})
