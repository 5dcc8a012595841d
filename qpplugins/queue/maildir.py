"""queue/maildir: deliver accepted mail into Maildirs, durably.

Arguments: ``DIR [PATTERN] [MODE]``. ``DIR`` is the Maildir (or the base of
several; a relative ``DIR`` is taken in the directory the server was started
in, like ``spool/maildir`` of the sample configuration); ``PATTERN`` names a
sub-directory per recipient with ``%d`` (domain), ``%l`` (local part) and
``%u`` (the whole address), all lower-cased; ``MODE`` is the octal file mode (default 0600; ``DIR MODE``
without a pattern works too, as does ``mode=0640``).

Each message gets ``Return-Path``, the client's DSN request as ``X-DSN-Mail``
and ``X-DSN-Rcpt`` fields when it made one (``docs/esmtp.md``), and one
``Delivered-To`` per recipient. It
is written to ``tmp/`` and renamed into ``new/``, and ``250 Queued! <Message-Id>``
is sent only once the file and its directory entry are durable: by default one
``syncfs`` per batch of deliveries (group commit), with ``sync=fsync`` an fsync
per file and one directory fsync per batch. Small messages are written and
synced by the engine's Maildir writer process; large ones, and ``sync=fsync``,
on the engine's thread pool (``docs/queue-plugins.md``, Durability). If any step
fails nothing is left in ``new/`` and the client gets ``452``.

config/plugins::

    queue/maildir spool/maildir
    queue/maildir /var/mail/domains %d/%l
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from twisted.internet.defer import Deferred

from qptwisted import Address, Plugin, Transaction, arg
from qptwisted.lib.maildir import SYNC_MODES, deliver_to_maildirs


class Maildir(Plugin):
    """Queue into one or more Maildirs."""

    name = "queue/maildir"
    directory: Path = arg.path(help="the Maildir (or the base of several)", positional=True, workdir=True)
    pattern: str = arg.str("", "sub-directory per recipient: %d domain, %l local part, %u address",
                           positional=True)
    mode: int = arg.octal(0o600, "file mode of delivered messages", positional=True)
    sync: str = arg.choice(SYNC_MODES, SYNC_MODES[0], "how a delivery is made durable before the 250: syncfs "
                           "(one filesystem sync per batch of deliveries) or fsync (each file, one "
                           "directory sync per batch)")

    def configure(self, words: Sequence[str] | None = None) -> None:
        """Read ``DIR MODE`` (a number where the pattern would be) as qpsmtpd did."""
        words = list(self.args if words is None else words)
        if len(words) > 1 and words[1].isdigit():
            words[1] = f"mode={words[1]}"
        super().configure(words)

    def directory_for(self, rcpt: Address) -> str:
        """The Maildir of one recipient."""
        if not self.pattern:
            return str(self.directory)
        local, domain = rcpt.user.lower(), rcpt.host.lower()
        sub = self.pattern.replace("%l", local).replace("%d", domain).replace("%u", rcpt.canonical.lower())
        if ".." in sub.split("/") or sub.startswith("/"):
            raise ValueError(f"unsafe maildir path for {rcpt}")
        return os.path.join(self.directory, sub)

    def hook_queue(self, transaction: Transaction) -> Deferred[object]:
        return deliver_to_maildirs(self, transaction, self.directory_for, self.mode, self.sync)
