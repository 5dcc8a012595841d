"""queue/maildir-domain: one Maildir per user, per domain, users checked in SQL.

Arguments: ``BASE [DSN] [mode=OCTAL]``. Mail for ``user@domain`` goes to
``BASE/<domain>/<user>/{tmp,new,cur}`` (both lower-cased; a relative
``BASE`` is taken in the directory the server was started in). ``DSN`` is
``sqlite:PATH`` (default ``sqlite:users.sqlite`` in the config directory)
or ``postgresql://...``; the tables (created if missing, as in the seed
talk's schema)::

    domain(domain_id, is_active, domain_name)
    "user"(user_id, domain_id, can_receive, can_login, username)

The plugin has a ``rcpt`` hook: a recipient whose domain is not active or
whose user cannot receive is refused there (550), and a known one is
accepted (250), so nothing is dropped silently at queue time. Database
errors at RCPT give 450. The queue hook delivers as ``queue/maildir`` does
(same ``sync`` argument): each recipient's copy (with ``Delivered-To``) is
written to ``tmp/`` and renamed into ``new/``, and the 250 waits until the
copies and their directory entries are durable; all or nothing: if one copy
fails, none is left in ``new/`` and the client gets 452.

config/plugins::

    queue/maildir-domain /var/mail/domains sqlite:users.sqlite
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from qpplugins.queue._sqldb import Database
from qptwisted import DECLINED, DENY, DENYSOFT, LOGERROR, OK, Address, ArgumentError, Plugin, Transaction, arg
from qptwisted.lib.maildir import SYNC_MODES, deliver_to_maildirs

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS domain (
        domain_id INTEGER PRIMARY KEY AUTOINCREMENT,
        is_active SMALLINT NOT NULL DEFAULT 1,
        domain_name VARCHAR(255) NOT NULL UNIQUE)""",
    """CREATE TABLE IF NOT EXISTS "user" (
        user_id INTEGER PRIMARY KEY AUTOINCREMENT,
        domain_id INTEGER NOT NULL,
        can_receive SMALLINT NOT NULL,
        can_login SMALLINT NOT NULL,
        username VARCHAR(255) NOT NULL)""",
]
LOOKUP = """SELECT u.user_id FROM domain d JOIN "user" u ON u.domain_id = d.domain_id
    WHERE lower(d.domain_name) = ? AND d.is_active = 1 AND lower(u.username) = ? AND u.can_receive = 1"""
_SAFE = re.compile(r"[^/\0]+\Z")


class MaildirDomain(Plugin):
    """Per-domain, per-user Maildirs with a SQL user table."""

    name = "queue/maildir-domain"
    base: Path = arg.path(help="the directory of the domains' Maildirs", positional=True, workdir=True)
    dsn: str = arg.str("sqlite:users.sqlite", "the user database: sqlite:PATH (relative: in the config "
                       "directory) or postgresql://...", positional=True)
    mode: int = arg.octal(0o600, "the file mode of delivered messages")
    sync: str = arg.choice(SYNC_MODES, SYNC_MODES[0], "how a delivery is made durable before the 250: syncfs "
                           "(one filesystem sync per batch of deliveries) or fsync (each file, one "
                           "directory sync per batch)")

    def register(self, *args: str) -> None:
        """Open the database pool."""
        try:
            self.db = Database(self.dsn, self.engine.config.resolve)
        except ValueError as err:
            raise ArgumentError(f"plugin {self.plugin_name}: argument dsn: {err}") from None
        self._schema_ready = False

    def close(self) -> None:
        """Close the database pool."""
        self.db.close()

    def _lookup(self, cursor: Any, domain: str, user: str) -> bool:
        if not self._schema_ready:
            for statement in SCHEMA:
                cursor.execute(self.db.sql(statement))
            self._schema_ready = True
        cursor.execute(self.db.sql(LOOKUP), (domain, user))
        return cursor.fetchone() is not None

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> Deferred[Any] | Any:
        domain, user = rcpt.host.lower(), rcpt.user.lower()
        if not domain or not _SAFE.match(domain) or not _SAFE.match(user) or user in (".", ".."):
            return DENY, f"{rcpt}: no such user here (#5.1.1)"

        def known(found: bool) -> Any:
            return (OK, f"{rcpt}, recipient ok") if found else (DENY, f"{rcpt}: no such user here (#5.1.1)")

        def failed(failure: Any) -> Any:
            self.log(LOGERROR, f"user lookup failed: {failure.getErrorMessage()}")
            return DENYSOFT, "User database unavailable, try again later (#4.3.0)"

        deferred: Deferred[Any] = self.db.run_interaction(self._lookup, domain, user)
        return deferred.addCallbacks(known, failed)

    def directory_for(self, rcpt: Address) -> str:
        """``BASE/<domain>/<user>``."""
        return os.path.join(self.base, rcpt.host.lower(), rcpt.user.lower())

    def hook_queue(self, transaction: Transaction) -> Deferred[Any] | Any:
        if not transaction.recipients:
            return DECLINED
        return deliver_to_maildirs(self, transaction, self.directory_for, self.mode, self.sync)
