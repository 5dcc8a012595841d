"""Reloads do not leak: each SIGHUP's retired engine gives back its files and threads.

The real server runs as a subprocess with plugins that hold resources
(``greylisting`` and ``karma`` keep an SQLite store, ``queue/sql`` a database
pool with its own thread). After each of many reloads a message is delivered;
the old engine closes when its last connection has ended. The process's open
descriptors (``/proc/PID/fd``) and threads (``/proc/PID/task``) after the
last reload must be what they were after the first, give or take a few.
"""

from __future__ import annotations

import os
import signal
import smtplib
import sqlite3
import sys
from contextlib import closing

from twisted.trial import unittest

from qptwisted.testing import write_config
from tests.test_e2e import PATIENCE, E2EBase, Server, message, wait_for

RELOADS = 50
#: what may differ between the two counts without a leak (a pool thread started late, a lingering socket)
SLACK = 4

PLUGINS = [
    "greylisting reject 0",
    "karma",
    "rcpt_ok",
    "queue/sql sqlite:queue.sqlite",
]


def open_fds(pid: int) -> int:
    """Descriptors the process holds open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    """Threads of the process."""
    return len(os.listdir(f"/proc/{pid}/task"))


class ReloadLeakTests(E2EBase):
    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            raise unittest.SkipTest("counts descriptors and threads through /proc")

    def deliver(self, server: Server, token: str) -> None:
        """One message over a new connection, served by the engine of the latest reload."""
        client = smtplib.SMTP("127.0.0.1", server.port, timeout=PATIENCE)
        try:
            client.ehlo("client.test")
            self.assertEqual(client.sendmail("alice@example.org", ["bob@example.com"],
                                             message(token, rcpt="bob@example.com")), {})
        finally:
            client.quit()

    def reload(self, server: Server, number: int) -> None:
        """SIGHUP, and wait until the server logged its ``number``-th reload."""
        server.signal(signal.SIGHUP)
        wait_for(lambda: server.output().count("reloaded:") >= number, f"reload {number} to be logged")

    def settled(self, pid: int, fds: int, tasks: int) -> bool:
        """True once the counts are back within the slack (a closing engine's thread may take a moment)."""
        return open_fds(pid) <= fds + SLACK and threads(pid) <= tasks + SLACK

    def test_resources_do_not_grow_with_reloads(self) -> None:
        cwd = self.workdir()
        config = write_config(cwd / "etc", {
            "me": "mx.test", "rcpthosts": "example.com", "plugins": PLUGINS, "loglevel": "4",
            "spool_dir": str(cwd / "spool"),
        })
        server = Server(self, cwd, ["--config", str(config)])
        pid = server.process.pid
        self.deliver(server, "before")

        self.reload(server, 1)
        self.deliver(server, "first")
        fds, tasks = open_fds(pid), threads(pid)

        for number in range(2, RELOADS + 1):
            self.reload(server, number)
            self.deliver(server, f"reload-{number}")

        try:
            wait_for(lambda: self.settled(pid, fds, tasks), "the counts to settle", timeout=10)
        except AssertionError:
            self.fail(f"over {RELOADS} reloads the descriptors went from {fds} to {open_fds(pid)} and the "
                      f"threads from {tasks} to {threads(pid)}")
        self.assertIsNone(server.process.poll())
        with closing(sqlite3.connect(config / "queue.sqlite")) as db:
            self.assertEqual(db.execute("SELECT count(*) FROM messages").fetchone()[0], RELOADS + 1)
        self.assertNotIn("Traceback", server.output())
