"""queue/maildir: deliver accepted mail into Maildirs, durably.

Arguments: ``DIR [PATTERN] [MODE]``. ``DIR`` is the Maildir (or the base of
several); ``PATTERN`` names a sub-directory per recipient with ``%d``
(domain), ``%l`` (local part) and ``%u`` (the whole address), all
lower-cased; ``MODE`` is the octal file mode (default 0600).

Each message gets ``Return-Path`` and one ``Delivered-To`` per recipient. It
is written to ``tmp/``, fsynced, moved to ``new/`` and the directory fsynced,
all on the engine's thread pool, before ``250 Queued! <Message-Id>`` is sent.
If any step fails nothing is left in ``new/`` and the client gets ``452``.

config/plugins::

    queue/maildir spool/maildir
    queue/maildir /var/mail/domains %d/%l
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred

from qptwisted import Address, Plugin, Transaction
from qptwisted.lib.maildir import deliver_to_maildirs


class Maildir(Plugin):
    """Queue into one or more Maildirs."""

    name = "queue/maildir"

    def register(self, *args: str) -> None:
        """``DIR [PATTERN] [MODE]``."""
        if not args:
            raise ValueError("queue/maildir needs a directory: queue/maildir DIR [PATTERN] [MODE]")
        self.base = args[0]
        self.pattern = args[1] if len(args) > 1 and not args[1].isdigit() else ""
        mode = [arg for arg in args[1:] if arg.isdigit()]
        self.mode = int(mode[0], 8) if mode else 0o600

    def directory_for(self, rcpt: Address) -> str:
        """The Maildir of one recipient."""
        if not self.pattern:
            return self.base
        local, domain = rcpt.user.lower(), rcpt.host.lower()
        sub = self.pattern.replace("%l", local).replace("%d", domain).replace("%u", rcpt.canonical.lower())
        if ".." in sub.split("/") or sub.startswith("/"):
            raise ValueError(f"unsafe maildir path for {rcpt}")
        return os.path.join(self.base, sub)

    def hook_queue(self, transaction: Transaction) -> Deferred[object]:
        return deliver_to_maildirs(self, transaction, self.directory_for, self.mode)
