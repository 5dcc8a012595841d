"""bogus_bounce: refuse bounces that cannot be real.

A real bounce (null envelope sender ``<>``) goes to exactly one recipient
and carries no non-empty ``Return-Path`` header. Anything else sent from
``<>`` is spam pretending to be a bounce; it is refused after DATA with
``Invalid bounce (rcpt)`` or ``Invalid bounce (return-path)``.

Argument: what to do, ``deny`` (default), ``denysoft`` or ``log``.

config/plugins::

    bogus_bounce deny
"""

from __future__ import annotations

from qptwisted import DECLINED, DENY, DENYSOFT, LOGINFO, HookAnswer, Transaction
from qptwisted.lib.policy import PolicyPlugin

ACTIONS = {"deny": DENY, "denysoft": DENYSOFT, "log": DECLINED}


class BogusBounce(PolicyPlugin):
    """Refuse null-sender mail with several recipients or a Return-Path."""

    name = "bogus_bounce"

    def register(self, *args: str) -> None:
        """The optional argument is the action."""
        words = list(args)
        action = words.pop(0).lower() if len(words) % 2 else "deny"
        self.parse_args(words)
        if action not in ACTIONS:
            raise ValueError(f"bogus_bounce: action must be deny, denysoft or log, not {action!r}")
        self.action = ACTIONS[action]

    def _result(self, message: str) -> HookAnswer:
        self.log(LOGINFO, f"fail, {message}")
        return DECLINED if self.action is DECLINED else (self.action, message)

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
