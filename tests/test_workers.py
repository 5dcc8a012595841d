"""``--workers N``: prefork workers on one shared listening socket (loopback only)."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SkipTest, TestCase

from qptwisted.service.workers import _split, bind_listener

DEADLINE = 30.0  # a bound on every wait, never an assertion about speed


def _wait_for(predicate, what: str, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def _owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """The pid among ``pids`` holding the server side of a loopback connection."""
    local, remote = f":{server_port:04X}", f":{client_port:04X}"
    inode = None
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            if fields[1].endswith(local) and fields[2].endswith(remote):
                inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class SplitTests(TestCase):
    def test_escaped_colons(self) -> None:
        self.assertEqual(_split(r"tcp6:25:interface=\:\:1"), ["tcp6", "25", "interface=::1"])

    def test_bind_refuses_other_endpoints(self) -> None:
        self.assertRaises(ValueError, bind_listener, "unix:/nonexistent/socket")

    def test_bind_loopback(self) -> None:
        sock = bind_listener("tcp:0:interface=127.0.0.1:backlog=5")
        self.addCleanup(sock.close)
        self.assertEqual(sock.getsockname()[0], "127.0.0.1")
        self.assertFalse(sock.getblocking())


class WorkerPoolTests(TestCase):
    """A master with two workers, run as ``qpsmtpd --workers 2`` in a subprocess."""

    def setUp(self) -> None:
        if not os.path.exists("/proc/net/tcp") or not hasattr(signal, "SIGKILL"):
            raise SkipTest("needs Linux /proc and POSIX signals")
        base = os.path.abspath(self.mktemp())
        config = os.path.join(base, "config")
        os.makedirs(config)
        for name, text in {"me": "workers.test", "rcpthosts": "workers.test",
                           "plugins": "rcpt_ok\nqueue/discard", "loglevel": "6"}.items():
            with open(os.path.join(config, name), "w") as handle:
                handle.write(text + "\n")
        self.logfile = os.path.join(base, "master.log")
        log = open(self.logfile, "wb")
        self.addCleanup(log.close)
        self.master = subprocess.Popen(
            [sys.executable, "-c", "from qptwisted.service.tap import main; main()", "--config", config,
             "--port", "tcp:0:interface=127.0.0.1", "--workers", "2"],
            cwd=base, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.addCleanup(self._kill_all)
        self.port = int(_wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", self._log()),
                                  "the master to listen").group(1))
        _wait_for(lambda: len(self.worker_pids()) >= 2 and self._ready(2), "two workers")

    def _log(self) -> str:
        with open(self.logfile, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def _ready(self, count: int) -> bool:
        return self._log().count("qptwisted engine for workers.test") >= count

    def worker_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"started worker (\d+)", self._log())]

    def live_workers(self) -> list[int]:
        return [pid for pid in self.worker_pids() if _alive(pid)]

    def _kill_all(self) -> None:
        if self.master.poll() is None:
            self.master.kill()
            self.master.wait(DEADLINE)
        for pid in self.worker_pids():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def send(self, client: smtplib.SMTP) -> None:
        client.ehlo("client.test")
        refused = client.sendmail("alice@sender.test", ["bob@workers.test"],
                                  b"Subject: hi\r\n\r\nhello\r\n")
        self.assertEqual(refused, {})

    def serving_pid(self) -> int | None:
        """Deliver one message on a new connection; return the worker that served it."""
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=DEADLINE)
        try:
            owner = _owner(self.port, client.sock.getsockname()[1], self.live_workers())
            self.send(client)
        finally:
            client.quit()
        return owner

    def test_two_workers_share_one_port(self) -> None:
        seen: set[int | None] = set()
        for _ in range(400):
            seen.add(self.serving_pid())
            if len(seen - {None}) >= 2:
                break
        self.assertEqual(len(seen - {None}), 2, f"served by {seen}")
        self.assertTrue(seen - {None} <= set(self.worker_pids()))
        self.assertNotIn(self.master.pid, seen)

    def test_sighup_reaches_every_worker(self) -> None:
        workers = self.live_workers()
        self.master.send_signal(signal.SIGHUP)
        for pid in workers:
            _wait_for(lambda pid=pid: re.search(rf"\[worker {pid}\][^\n]*reloaded: ", self._log()),
                      f"worker {pid} to reload")
        self.assertEqual(sorted(self.live_workers()), sorted(workers))

    def test_killed_worker_is_replaced(self) -> None:
        victim = self.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: len(self.worker_pids()) >= 3 and self._ready(3), "a replacement worker")
        live = _wait_for(lambda: len(self.live_workers()) == 2 and self.live_workers(), "two live workers")
        self.assertNotIn(victim, live)
        for _ in range(5):  # the port still serves
            self.assertIn(self.serving_pid(), live + [None])

    def test_sigterm_stops_all_after_transactions_finish(self) -> None:
        busy = smtplib.SMTP("127.0.0.1", self.port, timeout=DEADLINE)
        busy.ehlo("client.test")
        self.assertEqual(busy.mail("alice@sender.test")[0], 250)
        self.assertEqual(busy.rcpt("bob@workers.test")[0], 250)
        idle = socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE)
        self.assertTrue(idle.recv(1024).startswith(b"220 "))
        workers = self.live_workers()
        self.master.send_signal(signal.SIGTERM)
        # a session between transactions is told to go away ...
        self.assertTrue(idle.makefile("rb").readline().startswith(b"421 "))
        idle.close()
        # ... while the transaction in flight still completes
        self.assertEqual(busy.data(b"Subject: late\r\n\r\nstill accepted\r\n")[0], 250)
        busy.close()
        # twistd re-raises the signal it stopped on, so the exit status may be -SIGTERM
        self.assertIn(self.master.wait(DEADLINE), (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down", self._log())
        _wait_for(lambda: not any(_alive(pid) for pid in workers), "the workers to exit")
