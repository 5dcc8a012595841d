"""badmailfromto: refuse listed sender/recipient pairs.

Each line of ``config/badmailfromto`` is ``sender recipient`` (tab or
spaces). The sender may be ``@domain``. A matching pair gets ``550 mail to
RCPT not accepted here`` at RCPT (as "user unknown", 5.1.1); other
recipients of the same sender are unaffected.

Better than qpsmtpd: any whitespace separates the two fields (qpsmtpd
needed exactly one tab on the RCPT side), and ``@domain`` works there too.

config/plugins::

    badmailfromto
"""

from __future__ import annotations

from qptwisted import DECLINED, DENY, LOGINFO, Address, HookAnswer, Transaction
from qptwisted.lib.policy import PolicyPlugin


class BadMailFromTo(PolicyPlugin):
    """Refuse sender/recipient pairs listed in ``config/badmailfromto``."""

    name = "badmailfromto"

    def register(self, *args: str) -> None:
        """Read the pairs."""
        self.pairs: list[tuple[str, str]] = []
        for line in self.config_list("badmailfromto"):
            parts = line.split()
            if len(parts) >= 2 and "@" in parts[0]:
                self.pairs.append((parts[0].lower(), parts[1].lower()))

    def is_sender_immune(self, sender: Address | None) -> bool:
        """True if there is nothing to check for ``sender``."""
        if not self.pairs:
            return True
        if sender is None or sender.is_null:
            self.log(LOGINFO, "skip, null sender")
            return True
        return not sender.host or not sender.user

    def hook_mail(self, transaction: Transaction, sender: Address, **params: str) -> HookAnswer:
        if self.is_sender_immune(sender):
            return DECLINED
        host = sender.host.lower()
        address = f"{sender.user.lower()}@{host}"
        matches = {bad for bad, _ in self.pairs if bad in (address, f"@{host}")}
        if matches:
            transaction.notes["badmailfromto"] = matches
        return DECLINED

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: str) -> HookAnswer:
        senders = transaction.notes.get("badmailfromto")
        if not senders:
            return DECLINED
        recipient = rcpt.canonical.lower()
        for bad, to in self.pairs:
            if bad in senders and to in (recipient, f"@{rcpt.host.lower()}"):
                self.log(LOGINFO, f"fail, {transaction.sender} may not mail {recipient}")
                return DENY, f"mail to {recipient} not accepted here (#5.1.1)"
        return DECLINED
