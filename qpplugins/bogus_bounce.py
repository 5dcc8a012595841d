"""bogus_bounce: refuse bounces that cannot be real.

A real bounce (null envelope sender ``<>``) goes to exactly one recipient
and carries no non-empty ``Return-Path`` header. Anything else sent from
``<>`` is spam pretending to be a bounce; it is refused after DATA with
``Invalid bounce (rcpt)`` or ``Invalid bounce (return-path)``.

Argument: what to do, ``deny`` (default), ``denysoft`` or ``log`` (also
written ``action deny``); and ``loglevel`` (see :mod:`qptwisted.lib.policy`).

config/plugins::

    bogus_bounce deny
"""

from __future__ import annotations

from qptwisted import DECLINED, DENY, DENYSOFT, LOGINFO, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin

ACTIONS = {"deny": DENY, "denysoft": DENYSOFT, "log": DECLINED}


class BogusBounce(PolicyPlugin):
    """Refuse null-sender mail with several recipients or a Return-Path."""

    name = "bogus_bounce"
    action: str = arg.choice(tuple(ACTIONS), "deny", "what a bogus bounce gets: deny (552), denysoft (452) "
                             "or log", positional=True)

    def _result(self, message: str) -> HookAnswer:
        self.log(LOGINFO, f"fail, {message}")
        code = ACTIONS[self.action]
        return DECLINED if code is DECLINED else (code, message)

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        sender = transaction.sender
        if sender is None or not sender.is_null:
            self.log(LOGINFO, "pass, not a null sender")
            return DECLINED
        if len(transaction.recipients) != 1:
            return self._result("Invalid bounce (rcpt)")
        return_path = transaction.header.get("Return-Path")
        if return_path is not None and str(return_path).strip() not in ("", "<>"):
            return self._result("Invalid bounce (return-path)")
        self.log(LOGINFO, "pass")
        return DECLINED
