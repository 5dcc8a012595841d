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

import itertools
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from qptwisted import DENYSOFT, LOGERROR, OK, Address, Plugin, Transaction

_counter = itertools.count()


def maildir_name() -> str:
    """A unique Maildir file name (time, microseconds, pid, counter, host)."""
    now = time.time()
    return (f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}."
            f"{socket.gethostname().replace('/', '_').replace(':', '_')}")


def fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def deliver(directories: dict[str, list[Address]], sender: Address, chunks: list[bytes],
            mode: int) -> list[str]:
    """Write one message into each Maildir; all or nothing. Runs in a thread."""
    staged: list[tuple[str, str]] = []
    done: list[str] = []
    try:
        for directory, recipients in directories.items():
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(directory, sub), exist_ok=True)
            name = maildir_name()
            tmp = os.path.join(directory, "tmp", name)
            staged.append((tmp, os.path.join(directory, "new", name)))
            head = [f"Return-Path: {sender}\n".encode()]
            head += [f"Delivered-To: {rcpt.address}\n".encode() for rcpt in reversed(recipients)]
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.writelines(head)
                handle.writelines(chunks)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, new in staged:
            os.link(tmp, new)
            done.append(new)
        for _, new in staged:
            fsync_dir(os.path.dirname(new))
        return done
    except BaseException:
        for path in done:
            _unlink(path)
        raise
    finally:
        for tmp, _ in staged:
            _unlink(tmp)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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
        return queue_to_maildirs(self, transaction, self.directory_for, self.mode)


def queue_to_maildirs(plugin: Plugin, transaction: Transaction, directory_for: Callable[[Address], str],
                      mode: int) -> Deferred[object]:
    """Deliver ``transaction`` into the Maildir of each recipient on the thread pool.

    Answers ``250 Queued! <Message-Id>`` once every copy is durable, else 452.
    """
    directories: dict[str, list[Address]] = defaultdict(list)
    for rcpt in transaction.recipients:
        directories[directory_for(rcpt)].append(rcpt)
    chunks = list(transaction.iter_message())
    sender = transaction.sender
    assert sender is not None
    message_id = transaction.message_id or ""

    def delivered(paths: list[str]) -> tuple[object, str]:
        transaction.notes["queue_id"] = os.path.basename(paths[0])
        return OK, f"Queued! {message_id}".rstrip()

    def failed(failure: Failure) -> tuple[object, str]:
        plugin.log(LOGERROR, f"delivery failed: {failure.getErrorMessage()}")
        return DENYSOFT, "Queue error, try again later (#4.3.0)"

    deferred = plugin.defer_to_thread(deliver, dict(directories), sender, chunks, mode)
    return deferred.addCallbacks(delivered, failed)
