"""The service's preparation before the ports are bound: SIGHUP handler, spool leftovers."""

from __future__ import annotations

import signal
from pathlib import Path

from twisted.trial import unittest

from qptwisted.service.server import QPSMTPDService
from qptwisted.testing import write_config
from tests.test_spool import dead_pid


class PrivilegedStartTests(unittest.TestCase):
    def setUp(self) -> None:
        self.spool = Path(self.mktemp())
        self.spool.mkdir()
        self.orphan = self.spool / f"qptmsg.{dead_pid()}.body"
        self.orphan.write_bytes(b"partial body")
        config = write_config(self.mktemp(), {"plugins": ["rcpt_ok", "queue/discard"],
                                              "spool_dir": str(self.spool)})
        self.server = QPSMTPDService(str(config))
        self.before = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, self.before)

    def test_before_the_ports_are_bound(self) -> None:
        # twistd binds the listening ports in privilegedStartService, before startService
        self.server.privilegedStartService()
        self.addCleanup(self.server.stopService)
        self.assertFalse(self.orphan.exists())
        self.assertNotIn(signal.getsignal(signal.SIGHUP), (signal.SIG_DFL, signal.SIG_IGN, None))
        self.server.startService()
        self.server.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), self.before)

    def test_embedded_start_without_the_privileged_step(self) -> None:
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self.assertFalse(self.orphan.exists())
        self.assertNotIn(signal.getsignal(signal.SIGHUP), (signal.SIG_DFL, signal.SIG_IGN, None))
