# Seed 002 (OSCON 2007 lightning talk), "Enforce 'server says hello first' protocol": 17 lines of Perl.
"""earlytalker: refuse clients that talk before the greeting.

A real mail server waits for the ``220`` greeting; many spam engines start
sending at once. The plugin holds the greeting back for ``wait`` seconds on
the engine's clock. Nothing blocks and nothing reads the socket: the engine
itself notes ``connection.early_talker`` when bytes arrive while the client
should be waiting. An early talker gets ``450 Don't be rude and talk before
I say hello!`` and the connection is closed.

Argument: ``wait SECONDS`` (default 1).

config/plugins::

    earlytalker wait 2
"""

from twisted.internet.task import deferLater

from qptwisted import DECLINED, DENYSOFT, LOGDEBUG, LOGINFO, HookAnswer, Plugin, Transaction, arg


class EarlyTalker(Plugin):
    """Hold the greeting back and refuse clients that talk meanwhile."""

    name = "earlytalker"
    wait = arg.duration(1, "how long the greeting waits for a client that talks first")

    async def hook_connect(self, transaction: Transaction) -> HookAnswer:
        await deferLater(self.clock, self.wait)
        if transaction.connection.early_talker:
            self.log(LOGDEBUG, "remote host talked before we said hello")
            return DENYSOFT, "Don't be rude and talk before I say hello!"
        self.log(LOGINFO, "remote host said nothing spontaneous, proceeding")
        return DECLINED
