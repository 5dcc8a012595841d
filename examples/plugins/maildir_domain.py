# Seed 003 (the blog post's "queue/maildir-domain"): 112 lines of Perl.
"""maildir_domain: final delivery into one Maildir per user and domain, users from an SQL table.

The recipient gate and the queue for the domains of an SQLite database, with
the blog post's tables::

    domain(domain_id, is_active, domain_name)
    "user"(user_id, domain_id, can_receive, can_login, username)

At RCPT, a user who can receive mail in an active domain is accepted; every
other recipient gets ``550 <address>: no such user here``, so nothing is
dropped after the message was accepted. The message goes to
``MAILDIRS/<domain>/<user>/new`` (lower-cased), with ``Delivered-To``,
written and fsynced on the engine's thread pool before the 250
(``qptwisted.lib.maildir``); if any copy fails, none is kept and the client
gets a 452. The lookups run on the thread pool too.

Arguments: ``MAILDIRS [USERS]``: the base directory (relative: the directory
the server was started in) and the SQLite file (default ``users.sqlite``,
relative: the config directory).

config/plugins::

    maildir_domain /var/mail/domains /etc/qpsmtpd/users.sqlite
"""

import os
import sqlite3
from contextlib import closing
from typing import Any

from qptwisted import DENY, OK, Address, HookAnswer, Plugin, Transaction, arg
from qptwisted.lib.maildir import deliver_to_maildirs

LOOKUP = """SELECT 1 FROM domain JOIN "user" USING (domain_id) WHERE is_active = 1 AND can_receive = 1
            AND lower(domain_name) = ? AND lower(username) = ?"""


class MaildirDomain(Plugin):
    """Accept the users of the database and deliver into their Maildirs."""

    name = "maildir_domain"
    maildirs = arg.path(help="the base of the Maildirs", positional=True, workdir=True)
    users = arg.path("users.sqlite", "the SQLite file of domains and users", positional=True)

    def known(self, rcpt: Address) -> bool:
        """True if ``rcpt`` may receive mail here (blocking: runs on the thread pool)."""
        with closing(sqlite3.connect(self.users)) as db:
            return db.execute(LOOKUP, (rcpt.host.lower(), rcpt.user.lower())).fetchone() is not None

    async def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        if await self.defer_to_thread(self.known, rcpt):
            return OK
        return DENY, f"{rcpt}: no such user here"

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        return deliver_to_maildirs(self, transaction, self.maildir)

    def maildir(self, rcpt: Address) -> str:
        """``MAILDIRS/<domain>/<user>``."""
        return os.path.join(self.maildirs, rcpt.host.lower(), rcpt.user.lower())
