"""Durable Maildir delivery for queue plugins: all or nothing, fsynced, streamed from the spool.

:func:`deliver_to_maildirs` answers a ``queue`` hook: each recipient's
Maildir gets one copy (``Return-Path`` and one ``Delivered-To`` per
recipient on top), written to ``tmp/``, fsynced, linked into ``new/`` and the
directories fsynced, all on the engine's thread pool, before ``250 Queued!``
is sent. Deliveries that arrive while a directory fsync runs share the next
one (:class:`GroupCommit`): one directory fsync per batch, not per message.
The message is read from the transaction's spool in 64 KiB chunks inside the
delivery thread, so its size never shows in the server's memory.
If any step fails, nothing is left in ``new/`` and the client gets 452.

A DSN request (RFC 3461) goes into the copy as header fields in SMTP's own
syntax, below ``Return-Path``: ``X-DSN-Mail: RET=HDRS ENVID=<xtext>`` when
MAIL had DSN parameters, and one ``X-DSN-Rcpt: <rcpt> NOTIFY=... ORCPT=...``
per recipient of that copy that had some. Like ``Delivered-To``, these are
trustworthy only at the top of the message: the delivery agent that acts on
them reads the fields above the first ``Received``.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from qptwisted.core.codes import DENYSOFT, LOGERROR, OK
from qptwisted.mail.address import Address
from qptwisted.mail.dsn import MessageDSN
from qptwisted.mail.transaction import Transaction

if TYPE_CHECKING:
    from qptwisted.core.plugin import Plugin

_counter = itertools.count()


def maildir_name() -> str:
    """A unique Maildir file name (time, microseconds, pid, counter, host)."""
    now = time.time()
    return (f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}."
            f"{socket.gethostname().replace('/', '_').replace(':', '_')}")


def fsync_dir(path: str) -> None:
    """Make a rename (or link) in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupCommit:
    """Directory fsyncs shared by the deliveries that need them at the same time (group commit).

    A delivery links its file into ``new/`` and must not be answered before
    that directory entry is durable. Deliveries that link while another
    thread's fsync of the same directory runs wait for it and share the
    next one: one directory fsync per batch instead of one per message,
    with the same guarantee (each waits for an fsync that began after its
    own link). Thread-safe; used from the engine's thread pool.
    """

    def __init__(self, sync: Callable[[str], None] = fsync_dir) -> None:
        self._sync = sync
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._linked: dict[str, int] = {}  # links made into each directory so far
        self._synced: dict[str, int] = {}  # links covered by a finished fsync
        self._running: set[str] = set()
        self.syncs = 0

    def durable(self, directory: str) -> None:
        """Return once a link made into ``directory`` before this call is durable."""
        with self._lock:
            mine = self._linked[directory] = self._linked.get(directory, 0) + 1
            while self._synced.get(directory, 0) < mine:
                if directory in self._running:
                    self._done.wait()
                    continue
                self._running.add(directory)
                covers = self._linked[directory]
                self._lock.release()
                try:
                    self._sync(directory)
                    self.syncs += 1
                finally:
                    self._lock.acquire()
                    self._running.discard(directory)
                    self._done.notify_all()
                self._synced[directory] = max(self._synced.get(directory, 0), covers)


#: the group commit of this process (every Maildir delivery goes through it)
GROUP_COMMIT = GroupCommit()
_made: set[str] = set()


def _maildir(directory: str) -> None:
    """Create ``tmp/``, ``new/`` and ``cur/`` once per directory and process."""
    if directory not in _made:
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(directory, sub), exist_ok=True)
        _made.add(directory)


def dsn_fields(dsn: MessageDSN | None, recipients: Iterable[Address]) -> list[bytes]:
    """The ``X-DSN-Mail`` / ``X-DSN-Rcpt`` header lines of a DSN request (none without one)."""
    lines = [f"X-DSN-Mail: {' '.join(dsn.params())}\n".encode()] if dsn is not None else []
    lines += [f"X-DSN-Rcpt: {rcpt} {' '.join(rcpt.dsn.params())}\n".encode()
              for rcpt in recipients if rcpt.dsn is not None]
    return lines


def deliver(directories: dict[str, list[Address]], sender: Address,
            message: Callable[[], Iterable[bytes]], mode: int = 0o600,
            dsn: MessageDSN | None = None) -> list[str]:
    """Write one message into each Maildir; all or nothing. Blocking: run it in a thread.

    ``message`` gives a fresh iteration over the stored message each time it
    is called (one per Maildir). ``dsn`` is the transaction's DSN request
    (with the recipients' own, written as :func:`dsn_fields`). Returns the
    paths in ``new/``.
    """
    staged: list[tuple[str, str]] = []
    done: list[str] = []
    try:
        for directory, recipients in directories.items():
            _maildir(directory)
            name = maildir_name()
            tmp = os.path.join(directory, "tmp", name)
            staged.append((tmp, os.path.join(directory, "new", name)))
            head = [f"Return-Path: {sender}\n".encode(), *dsn_fields(dsn, recipients)]
            head += [f"Delivered-To: {rcpt.address}\n".encode() for rcpt in reversed(recipients)]
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileNotFoundError:  # the Maildir was removed since: make it again
                _made.discard(directory)
                _maildir(directory)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.writelines(head)
                for chunk in message():
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, new in staged:
            os.link(tmp, new)
            done.append(new)
        for directory in dict.fromkeys(os.path.dirname(new) for new in done):
            GROUP_COMMIT.durable(directory)
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


def deliver_to_maildirs(plugin: Plugin, transaction: Transaction, directory_for: Callable[[Address], str],
                        mode: int = 0o600) -> Deferred[object]:
    """Deliver ``transaction`` into the Maildir of each recipient on the engine's thread pool.

    Answers ``(OK, "Queued! <Message-Id>")`` once every copy is durable, else
    ``(DENYSOFT, ...)`` with the reason in the log.
    """
    directories: dict[str, list[Address]] = defaultdict(list)
    for rcpt in transaction.recipients:
        directories[directory_for(rcpt)].append(rcpt)
    sender = transaction.sender
    assert sender is not None
    message_id = transaction.message_id or ""

    def delivered(paths: list[str]) -> tuple[object, str]:
        transaction.notes["queue_id"] = os.path.basename(paths[0])
        return OK, f"Queued! {message_id}".rstrip()

    def failed(failure: Failure) -> tuple[object, str]:
        error = failure.value
        reason = str(error) or type(error).__name__
        plugin.log(LOGERROR, f"delivery failed: {reason}")
        return DENYSOFT, "Queue error, try again later (#4.3.0)"

    deferred = plugin.defer_to_thread(deliver, dict(directories), sender, transaction.iter_message, mode,
                                      transaction.dsn)
    return deferred.addCallbacks(delivered, failed)
