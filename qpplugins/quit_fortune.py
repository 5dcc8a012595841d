"""quit_fortune: a fortune cookie in the goodbye of old-fashioned clients.

Clients that said HELO (not EHLO) get the output of ``fortune -s`` in the
``221`` reply to QUIT. The program runs as a child process through the
reactor, so the server does not wait for it; if it is missing or fails the
normal goodbye is sent.

Argument: ``fortune PATH`` (default: ``fortune`` on ``PATH`` or in the Debian games
directory).

config/plugins::

    quit_fortune
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutput

from qptwisted import DECLINED, LOGDEBUG, OK, HookAnswer, Plugin, Transaction, arg


class QuitFortune(Plugin):
    """Say goodbye with a fortune."""

    name = "quit_fortune"
    fortune: str | None = arg.str(None, "the fortune program (default: found on PATH or in the games "
                                  "directory)")

    def register(self, *args: str) -> None:
        """Find the fortune program."""
        if not self.fortune:
            search = os.environ.get("PATH", os.defpath) + os.pathsep + os.path.join(os.sep, "usr", "games")
            self.fortune = shutil.which("fortune", path=search)

    def run_fortune(self) -> Deferred[bytes]:
        """The output of ``fortune -s``; tests replace this."""
        from twisted.internet import reactor

        assert self.fortune is not None
        return getProcessOutput(self.fortune, ("-s",), env=dict(os.environ), reactor=reactor)

    def hook_quit(self, transaction: Transaction) -> HookAnswer:
        if transaction.connection.hello != "helo" or not self.fortune:
            return DECLINED
        me = self.engine.settings.me

        def reply(output: bytes) -> HookAnswer:
            lines = [f"  / {line}" for line in output.decode("utf-8", "replace").rstrip("\n").split("\n")]
            return OK, "\n".join([f"{me} closing connection.", *lines])

        def failed(failure: Any) -> HookAnswer:
            self.log(LOGDEBUG, f"fortune failed: {failure.getErrorMessage()}")
            return DECLINED

        return self.run_fortune().addCallbacks(reply, failed)
