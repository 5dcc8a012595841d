"""connection_time: the duration of a connection on the engine's clock."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted import OK, Plugin
from tests.plugins.policy_support import advance, dialogue


class Capture(Plugin):
    name = "test_capture_log"
    lines: list[tuple[int, str | None, str]] = []

    def hook_logging(self, transaction: object, level: int, hook: object, plugin: str | None,
                     message: str) -> object:
        self.lines.append((level, plugin, message))
        return OK


class ConnectionTimeTests(unittest.TestCase):
    def test_duration_logged(self) -> None:
        Capture.lines = []
        smtp = dialogue([Capture, "connection_time loglevel 3"])
        smtp.send("EHLO client.test")
        advance(smtp, 2.5)
        smtp.send("QUIT")
        smtp.close()
        self.assertIn((3, "connection_time", "2.500 s. from 192.0.2.1"), Capture.lines)
        self.assertEqual(smtp.session.connection.notes["connection_time"], 2.5)
