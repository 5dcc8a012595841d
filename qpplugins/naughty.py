"""naughty: carry out the refusals other plugins deferred with ``reject naughty``.

A plugin run with ``reject naughty`` does not refuse the client itself; it
stores its reply in the connection note ``naughty`` (see
:mod:`qptwisted.lib.policy`). This plugin refuses such clients at one chosen
phase, with every stored reason, so one place decides when naughty clients
are turned away and all other plugins (``is_immune``) stop spending work on
them.

Arguments:

``reject connect|mail|rcpt|data|data_post|queue_pre``
    the phase at which naughty clients are refused (default ``rcpt``; an
    unknown word is logged and means ``rcpt``); ``connect`` only
    sees what plugins before it in the chain decided.
``reject_type perm|temp|disconnect|temp_disconnect``
    default ``disconnect``; the first deferring plugin's own
    ``reject_type`` (note ``naughty_reject_type``) wins, as in qpsmtpd.

config/plugins::

    naughty reject rcpt reject_type disconnect
"""

from __future__ import annotations

from typing import Any

from qptwisted import DECLINED, DENY_DISCONNECT, LOGINFO, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin, reject_type_argument

PHASES = ("connect", "mail", "rcpt", "data", "data_post", "queue_pre")


class Naughty(PolicyPlugin):
    """Refuse clients marked naughty, at one phase."""

    name = "naughty"
    reject = arg.str("rcpt", f"the phase at which naughty clients are refused: {', '.join(PHASES)}")
    reject_type = reject_type_argument("disconnect")

    def register(self, *args: str) -> None:
        """Pick the phase (``reject``) and hook it."""
        phase = self.reject.lower()
        if phase not in PHASES:
            self.log(LOGINFO, f"unknown phase {phase!r}, using rcpt")
            phase = "rcpt"
        self.phase = phase
        self.register_hook(phase, self.naughty)

    def naughty(self, transaction: Transaction, *args: Any, **kwargs: Any) -> HookAnswer:
        """Refuse with the stored reasons if the connection is naughty."""
        notes = transaction.connection.notes
        message = notes.get("naughty")
        if not message:
            self.log(LOGINFO, "pass, clean")
            return DECLINED
        code = self.get_reject_type(DENY_DISCONNECT, notes.get("naughty_reject_type"))
        self.log(LOGINFO, f"fail, refusing a naughty client at {self.phase}")
        notes["rejected"] = True
        return code, str(message) if message is not True else "You were naughty"
