"""block_subject: refuse messages by Subject, for all or some recipient domains.

The subject filter of "Writing Applications with Qpsmtpd" (the seed talk):
spam filters do not catch everything, so known-bad subjects are refused
after DATA. Arguments: ``all``, or the recipient domains to protect (a
message is refused if any recipient is in one of them).

The subjects come from ``config/block_subject``, one per line, compared
case-insensitively with the whole Subject (a line ``/regex/`` is a regular
expression searched in it). Without that file the three subjects of the talk
are used. Refused with ``552 Message subject not accepted here``.

config/plugins::

    block_subject all
    block_subject example.com example.org
"""

from __future__ import annotations

import re

from qptwisted import DECLINED, DENY, LOGDEBUG, LOGINFO, HookAnswer, Plugin, Transaction, arg

DEFAULT_SUBJECTS = (
    "YOUR REPRESENTATIVE ASSISTANCE IS NEEDED",
    "Message From eBay Member",
    "The Ultimate Online Pharmaceutical",
)


class BlockSubject(Plugin):
    """Refuse blocked subjects after DATA."""

    name = "block_subject"
    domains: list[str] = arg.list(help="all, or the recipient domains to protect (commas or spaces)",
                                  positional=True)

    def register(self, *args: str) -> None:
        """Subjects from ``config/block_subject``."""
        words = [word.lower() for word in self.domains]
        self.protected = None if words[0] == "all" else set(words)
        lines = self.config_list("block_subject") or list(DEFAULT_SUBJECTS)
        self.subjects: list[str | re.Pattern[str]] = [
            re.compile(line[1:-1], re.IGNORECASE) if len(line) > 2 and line[0] == line[-1] == "/"
            else line.strip().lower() for line in lines if line.strip()]
        self.log(LOGDEBUG, f"blocking subjects {lines}")

    def blocked(self, subject: str) -> bool:
        """True if ``subject`` is on the list."""
        subject = " ".join(subject.split()).lower()
        return any(entry == subject if isinstance(entry, str) else entry.search(subject)
                   for entry in self.subjects)

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        domains = self.protected
        if domains is not None and not any(r.host.lower() in domains for r in transaction.recipients):
            return DECLINED
        subject = transaction.header.get("Subject")
        if subject is None or not self.blocked(str(subject)):
            return DECLINED
        self.log(LOGINFO, f"fail, blocked subject {str(subject)!r}")
        return DENY, "Message subject not accepted here"
