"""badmailfrom: refuse envelope senders listed in ``config/badmailfrom``.

Each line of ``config/badmailfrom`` is an entry and an optional reason:

- ``user@example.com``: that address (case-insensitive);
- ``@example.com``: every sender of that domain;
- a regular expression (any of ``/ ^ $ * + ! % ? \\``), matched against
  ``user@host`` with the host lower-cased, e.g. ``^spam.*@example\\.net$``.

The reply is the line's reason, else ``Your envelope sender is in my
badmailfrom list``. The null sender, senders without user or host, and
immune clients (relay clients, whitelisted hosts/senders) are skipped.

Arguments: ``reject 0|1|naughty``, ``reject_type``, ``loglevel`` (see
:mod:`qptwisted.lib.policy`). Patterns use Python's ``re`` syntax, which agrees
with Perl's for the usual cases; an invalid pattern is a start-up error
instead of a silent non-match.

config/plugins::

    badmailfrom reject naughty
"""

from __future__ import annotations

import re

from qptwisted import DECLINED, LOGDEBUG, LOGINFO, LOGWARN, Address, HookAnswer, Transaction
from qptwisted.lib.policy import PolicyPlugin, is_regex

DEFAULT_REASON = "Your envelope sender is in my badmailfrom list"


class BadMailFrom(PolicyPlugin):
    """Refuse listed senders at MAIL."""

    name = "badmailfrom"

    def register(self, *args: str) -> None:
        """Read and compile ``config/badmailfrom``."""
        self.entries: list[tuple[str, re.Pattern[str] | None, str]] = []
        for line in self.config_list("badmailfrom"):
            parts = line.strip().split(None, 1)
            if not parts:
                continue
            bad = parts[0]
            reason = parts[1].strip() if len(parts) > 1 else DEFAULT_REASON
            if is_regex(bad):
                self.entries.append((bad, re.compile(bad), reason))
            elif "@" not in bad:
                self.log(LOGWARN, f"bad config: no @ sign in {bad}")
            else:
                self.entries.append((bad.lower(), None, reason))

    def is_immune_sender(self, sender: Address | None) -> bool:
        """True if the sender cannot be checked (empty list, null sender, no user or host)."""
        if not self.entries:
            self.log(LOGDEBUG, "skip, empty list")
            return True
        if sender is None or sender.is_null:
            self.log(LOGINFO, "skip, null sender")
            return True
        if not sender.host or not sender.user:
            self.log(LOGINFO, "skip, missing user or host")
            return True
        return False

    def is_match(self, sender: str, host: str) -> str | None:
        """The reason of the first entry matching ``user@host``, else None."""
        for bad, pattern, reason in self.entries:
            if pattern is not None:
                if pattern.search(sender):
                    self.log(LOGINFO, f"badmailfrom pattern ({bad}) match for {sender}")
                    return reason
            elif bad[0] == "@":
                if bad == f"@{host}":
                    return reason
            elif bad == sender:
                return reason
        return None

    def hook_mail(self, transaction: Transaction, sender: Address, **params: str) -> HookAnswer:
        if self.is_immune(transaction) or self.is_immune_sender(sender):
            return DECLINED
        host = sender.host.lower()
        reason = self.is_match(f"{sender.user.lower()}@{host}", host)
        if reason is None:
            self.log(LOGINFO, "pass")
            return DECLINED
        self.adjust_karma(transaction, -1)
        return self.get_reject(transaction, reason, f"{sender} in badmailfrom")
