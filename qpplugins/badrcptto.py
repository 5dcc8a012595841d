"""badrcptto: refuse recipients listed in ``config/badrcptto``.

Each line is an entry and an optional reason: ``user@example.com``,
``@example.com`` (a whole domain), or a regular expression (any of
``/ ^ $ * + ! % ? \\``) matched case-insensitively against ``user@host``.
The reply is the reason, else ``mail to ENTRY not accepted here``.

config/plugins::

    badrcptto
"""

from __future__ import annotations

import re

from qptwisted import DECLINED, DENY, LOGDEBUG, LOGINFO, Address, HookAnswer, Transaction
from qptwisted.lib.policy import PolicyPlugin, is_regex


class BadRcptTo(PolicyPlugin):
    """Refuse listed recipients at RCPT."""

    name = "badrcptto"

    def register(self, *args: str) -> None:
        """Read and compile ``config/badrcptto``."""
        self.entries: list[tuple[str, re.Pattern[str] | None, str | None]] = []
        for line in self.config_list("badrcptto"):
            parts = line.strip().split(None, 1)
            if not parts:
                continue
            bad = parts[0].lower()
            reason = parts[1].strip() if len(parts) > 1 else None
            pattern = re.compile(parts[0], re.IGNORECASE) if is_regex(bad) else None
            self.entries.append((bad, pattern, reason))

    @staticmethod
    def get_host_and_to(recipient: Address | None) -> tuple[str, str] | None:
        """``(host, user@host)`` lower-cased, or None for an address without host."""
        if recipient is None or not recipient.host:
            return None
        host = recipient.host.lower()
        return host, f"{recipient.user.lower()}@{host}"

    def is_match(self, to: str, host: str) -> tuple[str, str | None] | None:
        """The matching ``(entry, reason)``, else None."""
        for bad, pattern, reason in self.entries:
            if pattern is not None:
                if pattern.search(to):
                    return bad, reason
            elif bad == (f"@{host}" if bad.startswith("@") else to):
                return bad, reason
        return None

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: str) -> HookAnswer:
        parts = self.get_host_and_to(rcpt)
        if parts is None or not self.entries:
            self.log(LOGDEBUG, "skip")
            return DECLINED
        match = self.is_match(parts[1], parts[0])
        if match is None:
            self.log(LOGINFO, "pass")
            return DECLINED
        bad, reason = match
        self.adjust_karma(transaction, -2)
        self.log(LOGINFO, f"fail, {parts[1]} matches {bad}")
        return DENY, reason or f"mail to {bad} not accepted here"
