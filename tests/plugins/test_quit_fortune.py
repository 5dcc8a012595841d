"""quit_fortune: a fortune in the 221 for HELO clients, from a child process."""

from __future__ import annotations

import sys

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial import unittest

from tests.plugins.policy_support import codes, dialogue, plugin


class QuitFortuneTests(unittest.TestCase):
    def fake(self, smtp: object, output: bytes | None) -> None:
        quit_fortune = plugin(smtp.engine, "quit_fortune")  # type: ignore[attr-defined]
        quit_fortune.fortune = "fortune"
        if output is None:
            quit_fortune.run_fortune = lambda: fail(OSError("no fortune"))
        else:
            quit_fortune.run_fortune = lambda: succeed(output)

    def test_helo_client_gets_a_fortune(self) -> None:
        smtp = dialogue(["quit_fortune"])
        self.fake(smtp, b"Fortune favours the brave.\nReally.\n")
        smtp.send("HELO old.test")
        self.assertEqual(
            smtp.send("QUIT"),
            [(221, "2.0.0", "mx.test closing connection.\n  / Fortune favours the brave.\n  / Really.")],
        )
        self.assertTrue(smtp.closed)

    def test_ehlo_client_gets_the_normal_goodbye(self) -> None:
        smtp = dialogue(["quit_fortune"])
        self.fake(smtp, b"nope\n")
        smtp.send("EHLO new.test")
        self.assertEqual(
            smtp.send("QUIT"), [(221, "2.0.0", "mx.test closing connection. Have a wonderful day.")]
        )

    def test_failure_falls_back(self) -> None:
        smtp = dialogue(["quit_fortune"])
        self.fake(smtp, None)
        smtp.send("HELO old.test")
        self.assertEqual(codes(smtp.send("QUIT")), [221])

    def test_real_child_process(self) -> Deferred[None]:
        """The program really runs without blocking: a Python one-liner stands in for fortune."""
        smtp = dialogue(["quit_fortune"])
        quit_fortune = plugin(smtp.engine, "quit_fortune")
        quit_fortune.fortune = sys.executable
        from twisted.internet import reactor
        from twisted.internet.utils import getProcessOutput

        quit_fortune.run_fortune = lambda: getProcessOutput(
            sys.executable, ("-c", "print('a fortune')"), env={}, reactor=reactor
        )
        smtp.send("HELO old.test")
        self.assertEqual(smtp.send("QUIT"), [])
        done: Deferred[None] = Deferred()

        def check() -> None:
            if not smtp.closed:
                reactor.callLater(0.01, check)  # type: ignore[attr-defined]
                return
            self.assertEqual(smtp.replies(), [(221, "2.0.0", "mx.test closing connection.\n  / a fortune")])
            done.callback(None)

        check()
        return done
