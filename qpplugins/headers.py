"""headers: require headers, refuse duplicated singular headers, check the Date.

After DATA:

1. every header named by ``require`` must be present (default ``From,Date``):
   ``We require a valid Date header``;
2. singular headers (RFC 5322 3.6: Date, From, Sender, Reply-To, To, Cc,
   Bcc, Message-Id, In-Reply-To, References, Subject) may appear only once:
   ``Only one Subject header allowed. See RFC 5322, Section 3.6``;
3. with ``future N`` / ``past N`` (days), a Date outside that window is
   refused: ``The Date header is too far in the future`` / ``... past``; an
   unparsable Date is refused too when a window is set.

Messages over 500 kB are skipped (as qpsmtpd does); immune clients too.

Arguments: ``require H,H``, ``future N``, ``past N``, ``reject``,
``reject_type`` (default ``perm``), ``loglevel``. The window is measured on
the engine's clock.

config/plugins::

    headers require From,Date future 2 past 15 reject_type temp
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from qptwisted import DECLINED, LOGDEBUG, LOGINFO, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin, reject_type_argument

SINGULAR = ("Date", "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Message-Id",
            "In-Reply-To", "References", "Subject")


class Headers(PolicyPlugin):
    """Required, singular and dated headers."""

    name = "headers"
    require: list[str] = arg.list(["From", "Date"], "the headers every message must have, H,H,...")
    future: float = arg.float(0, "days a Date may lie in the future (0: not checked)")
    past: float = arg.float(0, "days a Date may lie in the past (0: not checked)")
    reject_type = reject_type_argument("perm")

    def invalid_date_range(self, date: str | None) -> str | None:
        """Why ``date`` is outside the window, else None."""
        if not self.future and not self.past:
            return None
        if not date:
            return "missing date header"
        try:
            when = parsedate_to_datetime(date.strip()).timestamp()
        except (TypeError, ValueError, IndexError):
            return "invalid date header"
        now = self.clock.seconds()
        if self.future and when > now + self.future * 86400:
            return "The Date header is too far in the future"
        if self.past and when < now - self.past * 86400:
            return "The Date header is too far in the past"
        return None

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        if transaction.data_size > 500000:
            self.log(LOGDEBUG, "skip, too big to check")
            return DECLINED
        if self.is_immune(transaction):
            return DECLINED
        header = transaction.header
        for name in self.require:
            if not header.get(name):
                self.adjust_karma(transaction, -1)
                return self.get_reject(transaction, f"We require a valid {name} header", f"no {name} header")
        for name in SINGULAR:
            if len(header.get_all(name, [])) > 1:
                self.adjust_karma(transaction, -1)
                message = f"Only one {name} header allowed. See RFC 5322, Section 3.6"
                return self.get_reject(transaction, message, f"too many {name} headers")
        date = header.get("Date")
        error = self.invalid_date_range(None if date is None else str(date))
        if error:
            self.adjust_karma(transaction, -1)
            return self.get_reject(transaction, error, error)
        self.log(LOGINFO, "pass")
        return DECLINED
