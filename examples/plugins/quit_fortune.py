# Seed 002 (OSCON 2007 lightning talk), "My first plugin!": 11 lines of Perl.
"""quit_fortune: a fortune cookie in the goodbye of clients that said HELO.

Clients that greet with plain HELO are probably people at a terminal; they
get the output of ``fortune -s`` in the ``221`` reply to QUIT. Clients that
say EHLO (mail servers) get the normal goodbye. The program runs on the
engine's thread pool, so the server never waits for it; if it fails, the
client gets the normal goodbye and the log says why.

Argument: ``fortune PATH``, the program (default ``/usr/games/fortune``);
without it the plugin declines.

config/plugins::

    quit_fortune
"""

import subprocess

from qptwisted import DECLINED, OK, HookAnswer, Plugin, Transaction, arg


class QuitFortune(Plugin):
    """Say goodbye with a fortune."""

    name = "quit_fortune"
    fortune = arg.path("/usr/games/fortune", "the fortune program")

    async def hook_quit(self, transaction: Transaction) -> HookAnswer:
        # if she talks EHLO she is probably too sophisticated to enjoy the fun, so skip it
        if transaction.connection.hello == "ehlo" or not self.fortune.exists():
            return DECLINED
        cookie = await self.defer_to_thread(subprocess.check_output, [self.fortune, "-s"], text=True)
        return OK, "\n / ".join([f"{self.me} closing connection.", *cookie.splitlines()])
