# Seed 004 ("Writing Applications with Qpsmtpd"), "A simple subject filter": 47 lines of Perl.
"""block_subject: refuse messages by Subject, for all recipients or those of some domains.

Spam filters do not catch everything. After DATA, a message whose Subject
(decoded, compared without regard to case) is one of the lines of
``config/block_subject`` is refused with ``552 Message denied``; without
that file the three subjects of the talk are blocked. ``all`` protects
every recipient; otherwise a message is checked only when one of its
recipients is in a listed domain. (It replaces the stock ``block_subject``
when its directory is in ``config/plugin_dirs``.)

Arguments: ``all``, or the recipient domains (separated by spaces or commas).

config/plugins::

    block_subject example.com example.org
"""

from qptwisted import DECLINED, DENY, LOGDEBUG, LOGINFO, HookAnswer, Plugin, Transaction, arg

SUBJECTS = ["YOUR REPRESENTATIVE ASSISTANCE IS NEEDED", "Message From eBay Member",
            "The Ultimate Online Pharmaceutical"]


class BlockSubject(Plugin):
    """Refuse blocked subjects after DATA."""

    name = "block_subject"
    domains = arg.list(help="all, or the recipient domains to protect", positional=True)

    def register(self, *args: str) -> None:
        """Read the subjects."""
        self.subjects = {line.lower() for line in self.config_list("block_subject") or SUBJECTS}
        self.log(LOGDEBUG, f"blocking subjects {sorted(self.subjects)}")

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        protected = {domain.lower() for domain in self.domains}
        if "all" not in protected and not protected & {rcpt.host.lower() for rcpt in transaction.recipients}:
            return DECLINED
        subject = transaction.header.get("Subject", "").strip()
        if subject.lower() in self.subjects:
            self.log(LOGINFO, f"block_subject invoked for {subject}")
            return DENY
        return DECLINED
