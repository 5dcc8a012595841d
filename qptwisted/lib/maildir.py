"""Durable Maildir delivery for queue plugins: all or nothing, fsynced, streamed from the spool.

:func:`deliver_to_maildirs` answers a ``queue`` hook: each recipient's
Maildir gets one copy (``Return-Path`` and one ``Delivered-To`` per
recipient on top), written to ``tmp/``, renamed into ``new/`` and made
durable before ``250 Queued!`` is sent. A small message whose body is in
memory goes to the engine's Maildir writer process
(:mod:`qptwisted.lib.maildir_writer`; its loop is :func:`serve_writer` here),
which syncs each batch once; without one (a test's fake clock) it is written
on the reactor thread and synced by :class:`BatchSync`. Larger messages run
on the engine's thread pool.
Durable means, by ``sync``: ``syncfs`` (the default on Linux) — one
``syncfs`` of the filesystem covers the files and renames of every delivery
that arrived while the previous one ran (group commit); ``fsync`` — each
file fsynced, one directory fsync per batch (:class:`GroupCommit`). Both
keep the rule "250 only once message and directory entry are durable".
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

import ctypes
import errno
import itertools
import os
import select
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.python.failure import Failure

from qptwisted.core.codes import DENYSOFT, LOGERROR, OK
from qptwisted.lib.maildir_writer import READY, Answer, Copies, Request, frame, unframe, writer_for
from qptwisted.mail.address import Address
from qptwisted.mail.dsn import MessageDSN
from qptwisted.mail.transaction import Transaction

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine
    from qptwisted.core.plugin import Plugin

_counter = itertools.count()


_host = socket.gethostname().replace("/", "_").replace(":", "_")


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):  # POSIX: a system call saved per message, still right after fork
    os.register_at_fork(after_in_child=_forked)


def maildir_name() -> str:
    """A unique Maildir file name (time, microseconds, pid, counter, host)."""
    now = time.time()
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{_pid}Q{next(_counter)}.{_host}"


def fsync_dir(path: str) -> None:
    """Make a rename (or link) in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupCommit:
    """Syncs shared by the deliveries that need them at the same time (group commit).

    A delivery must not be answered before its file and directory entry are
    durable. Deliveries that arrive while another thread's sync of the same
    place (a directory, or a whole filesystem) runs wait for it and share
    the next one: one sync per batch instead of one per message, with the
    same guarantee (each waits for a sync that began after its own link).
    Thread-safe; used from the engine's thread pool.
    """

    def __init__(self, sync: Callable[[str], None] = fsync_dir) -> None:
        self._sync = sync
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._linked: dict[object, int] = {}  # links made so far, per place
        self._synced: dict[object, int] = {}  # links covered by a finished sync
        self._running: set[object] = set()
        self.syncs = 0

    def durable(self, key: object, path: str | None = None) -> None:
        """Return once what was written under ``key`` (``path`` to sync, default ``key``) is durable."""
        with self._lock:
            mine = self._linked[key] = self._linked.get(key, 0) + 1
            while self._synced.get(key, 0) < mine:
                if key in self._running:
                    self._done.wait()
                    continue
                self._running.add(key)
                covers = self._linked[key]
                self._lock.release()
                try:
                    self._sync(path if path is not None else str(key))
                    self.syncs += 1
                finally:
                    self._lock.acquire()
                    self._running.discard(key)
                    self._done.notify_all()
                self._synced[key] = max(self._synced.get(key, 0), covers)


def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):  # not Linux
        return None
    function.argtypes = [ctypes.c_int]
    return function  # type: ignore[no-any-return]


_SYNCFS = _libc_syncfs()


def syncfs(path: str) -> None:
    """Make everything written on the filesystem of ``path`` durable (Linux ``syncfs``)."""
    if _SYNCFS is None:
        raise OSError(errno.ENOSYS, "syncfs is not available here")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
    finally:
        os.close(fd)


#: how deliveries are made durable: ``syncfs`` (files written, linked, one filesystem sync per batch;
#: the default where Linux offers it) or ``fsync`` (each file fsynced, one directory fsync per batch)
SYNC_MODES = ("syncfs", "fsync") if _SYNCFS is not None else ("fsync",)


#: the group commits of this process (every Maildir delivery goes through one)
GROUP_COMMIT = GroupCommit()
FILESYSTEM_COMMIT = GroupCommit(syncfs)
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


def _write_all(fd: int, pieces: list[bytes]) -> None:
    """Write ``pieces`` to ``fd`` with one ``writev`` (more only if the kernel wrote less)."""
    written = os.writev(fd, pieces)
    if written < sum(map(len, pieces)):  # rare on a regular file: a signal, or the disk filling up
        rest = memoryview(b"".join(pieces))[written:]
        while rest:
            rest = rest[os.write(fd, rest):]


def _write_message(fd: int, head: list[bytes], message: Iterable[bytes]) -> None:
    """Write ``head`` and the chunks of ``message``, at most about 64 KiB per system call."""
    pending, size = head, 0
    for chunk in message:
        pending.append(chunk)
        size += len(chunk)
        if size >= 1 << 16 or len(pending) >= 64:
            _write_all(fd, pending)
            pending, size = [], 0
    if pending:
        _write_all(fd, pending)


def deliver(directories: dict[str, list[Address]], sender: Address,
            message: Callable[[], Iterable[bytes]], mode: int = 0o600,
            dsn: MessageDSN | None = None, sync: str | None = SYNC_MODES[0]) -> list[str]:
    """Write one message into each Maildir; all or nothing. Blocking: run it in a thread.

    ``message`` gives a fresh iteration over the stored message each time it
    is called (one per Maildir). ``dsn`` is the transaction's DSN request
    (with the recipients' own, written as :func:`dsn_fields`); ``sync`` is
    one of :data:`SYNC_MODES`, or None when the caller makes the delivery
    durable itself (:class:`BatchSync`). Each file is written in ``tmp/``
    and renamed into ``new/`` under its unique name. Returns the paths in ``new/``.
    """
    return write_copies(copies_for(directories, sender, dsn), message, mode, sync)


def copies_for(directories: dict[str, list[Address]], sender: Address,
               dsn: MessageDSN | None = None) -> Copies:
    """What each Maildir's copy starts with: ``(directory, [Return-Path, DSN fields, Delivered-To ...])``."""
    copies = []
    for directory, recipients in directories.items():
        head = [f"Return-Path: {sender}\n".encode(), *dsn_fields(dsn, recipients)]
        head += [f"Delivered-To: {rcpt.address}\n".encode() for rcpt in reversed(recipients)]
        copies.append((directory, head))
    return copies


def write_copies(copies: Copies, message: Callable[[], Iterable[bytes]],
                 mode: int = 0o600, sync: str | None = SYNC_MODES[0]) -> list[str]:
    """Write one copy per ``(directory, head)`` (:func:`copies_for`): :func:`deliver`, envelope done."""
    per_file = sync == "fsync"
    staged: list[tuple[str, str]] = []
    done: list[str] = []
    try:
        for directory, head in copies:
            _maildir(directory)
            name = maildir_name()
            tmp = os.path.join(directory, "tmp", name)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileNotFoundError:  # the Maildir was removed since: make it again
                _made.discard(directory)
                _maildir(directory)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            staged.append((tmp, os.path.join(directory, "new", name)))
            try:
                _write_message(fd, list(head), message())
                if per_file:
                    os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, new in staged:  # unique names (time, pid, counter, host): a rename never replaces a message
            os.rename(tmp, new)
            done.append(new)
        if sync is None:  # the caller makes them durable
            return done
        directories_done = dict.fromkeys(os.path.dirname(new) for new in done)
        if per_file:
            for directory in directories_done:
                GROUP_COMMIT.durable(directory)
        else:  # one sync per filesystem covers the files and renames of earlier deliveries
            for device, directory in filesystems(directories_done).items():
                FILESYSTEM_COMMIT.durable(device, directory)
        return done
    except BaseException:
        unlink_all(done)
        raise
    finally:
        unlink_all(tmp for tmp, _ in staged[len(done):])  # written but not renamed


_devices: dict[str, int] = {}


def filesystems(directories: Iterable[str]) -> dict[int, str]:
    """One directory per filesystem (by device) among ``directories``."""
    found: dict[int, str] = {}
    for directory in directories:
        device = _devices.get(directory)
        if device is None:
            device = _devices[directory] = os.stat(directory).st_dev
        found.setdefault(device, directory)
    return found


class BatchSync:
    """One ``syncfs`` on the thread pool for every delivery written meanwhile on the reactor thread.

    Small messages (in memory) are written and renamed on the reactor thread:
    a few page-cache writes, faster than handing each to a thread. What
    makes them durable, a filesystem sync, runs on the thread pool; the
    deliveries written while it runs wait for the next one, so a busy
    server syncs once per batch, with one thread hand-off per batch.
    Single-threaded: used from the reactor only.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, list[Deferred[None]]] = {}
        self._running: set[int] = set()
        self.syncs = 0

    def durable(self, run: Callable[..., Deferred[Any]], device: int, directory: str) -> Deferred[None]:
        """A Deferred that fires once a sync of ``device`` that began after this call has finished."""
        waiting: Deferred[None] = Deferred()
        self._waiting.setdefault(device, []).append(waiting)
        if device not in self._running:
            self._start(run, device, directory)
        return waiting

    def _start(self, run: Callable[..., Deferred[Any]], device: int, directory: str) -> None:
        batch = self._waiting.pop(device)
        self._running.add(device)
        self.syncs += 1

        def finished(result: object) -> None:
            self._running.discard(device)
            for waiting in batch:
                if isinstance(result, Failure):
                    waiting.errback(result)
                else:
                    waiting.callback(None)
            if self._waiting.get(device):
                self._start(run, device, directory)

        run(syncfs, directory).addBoth(finished)


#: the batch sync of this process's reactor
BATCH_SYNC = BatchSync()
#: messages up to this size are written on the reactor thread when their body is in memory
REACTOR_WRITE_LIMIT = 256 * 1024


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def deliver_to_maildirs(plugin: Plugin, transaction: Transaction, directory_for: Callable[[Address], str],
                        mode: int = 0o600, sync: str = SYNC_MODES[0]) -> Deferred[object]:
    """Deliver ``transaction`` into the Maildir of each recipient (the writer process, or the thread pool).

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

    body = transaction.body
    small = (sync == "syncfs" and (body is None or body.filename is None)
             and transaction.body_length < REACTOR_WRITE_LIMIT)
    if not small:
        deferred = plugin.defer_to_thread(deliver, dict(directories), sender, transaction.iter_message,
                                          mode, transaction.dsn, sync)
        return deferred.addCallbacks(delivered, failed)
    copies, message = copies_for(directories, sender, transaction.dsn), transaction.message_bytes()
    writer = writer_for(plugin.engine, write_here)
    written = writer.deliver(copies, message, mode) if writer is not None else \
        write_here(plugin.engine, copies, message, mode)
    return written.addCallbacks(delivered, failed)


def write_here(engine: Engine, copies: Copies, message: bytes, mode: int) -> Deferred[list[str]]:
    """Write a small delivery on the reactor thread (page-cache writes); one batch sync makes it durable.

    Where there is no writer process (a test's fake clock, or one that
    could not start). Fires with the paths in ``new/`` once they are durable.
    """
    try:
        paths = write_copies(copies, lambda: [message], mode, None)
    except Exception:
        return fail()

    def undo(failure: Failure) -> Failure:
        unlink_all(paths)  # all or nothing: what is not durable is not delivered
        return failure

    syncs = [BATCH_SYNC.durable(engine.defer_to_thread, device, directory)
             for device, directory in filesystems(os.path.dirname(path) for path in paths).items()]
    done = syncs[0] if len(syncs) == 1 else gatherResults(syncs, consumeErrors=True)
    return done.addCallback(lambda _: paths).addErrback(undo)


def unlink_all(paths: Iterable[str]) -> None:
    """Remove ``paths`` (those already gone too)."""
    for path in paths:
        _unlink(path)


# -- the writer process (qptwisted.lib.maildir_writer starts it) ------------------------------
def _write(requests: list[Request]) -> list[Answer]:
    """Write (not yet sync) each request's copies: its paths, or its error."""
    answers: list[Answer] = []
    for number, mode, copies, message in requests:
        try:
            paths = write_copies(copies, lambda message=message: [message], mode, None)  # type: ignore[misc]
            answers.append((number, paths, None))
        except OSError as err:
            answers.append((number, None, str(err) or type(err).__name__))
    return answers


def _sync(answers: list[Answer]) -> bytes:
    """Make what ``answers`` wrote durable (one ``syncfs`` per filesystem); the answer frames."""
    written = [path for _number, paths, _error in answers for path in paths or ()]
    try:
        for directory in filesystems(dict.fromkeys(map(os.path.dirname, written))).values():
            syncfs(directory)
    except OSError as err:  # nothing of this batch is known to be durable: none of it was delivered
        unlink_all(written)
        answers = [(number, None, f"sync failed: {err}" if done else error)
                   for number, done, error in answers]
    return b"".join(map(frame, answers))


def _write_out(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


#: below malloc's mmap threshold: a larger buffer costs an mmap, an mremap and a munmap per read
_READ_SIZE = 1 << 16
#: a batch stops growing here, so that its first deliveries are not kept waiting long
_BATCH_LIMIT = 256


def serve_writer(requests_fd: int = 0, answers_fd: int = 1) -> None:
    """The writer's loop: read deliveries until ``requests_fd`` closes; answer each batch once durable.

    A batch is everything that arrives before its sync begins: what had
    arrived when the writer woke, and what arrived while that was being
    written (up to :data:`_BATCH_LIMIT` deliveries). A sync costs the
    machine far more than a file write, and a delivery that arrives while
    others are written would otherwise wait for this sync and then have one
    of its own. (A sync on a thread of its own, overlapping the next writes,
    made smaller batches and cost more CPU per message than it saved.)
    """
    _write_out(answers_fd, frame(READY))
    buffer, more = b"", True
    while more:
        data = os.read(requests_fd, _READ_SIZE)
        more = bool(data)
        buffer += data
        answers: list[Answer] = []
        while len(answers) < _BATCH_LIMIT:
            while more and select.select([requests_fd], [], [], 0)[0]:  # all that has arrived meanwhile
                data = os.read(requests_fd, _READ_SIZE)
                more = bool(data)
                buffer += data
            requests, buffer = unframe(buffer)
            if not requests:
                break
            answers += _write(requests)
        if answers:
            _write_out(answers_fd, _sync(answers))


def main() -> None:
    """The writer process (``python -m qptwisted.lib.maildir``): :func:`serve_writer` on stdin and stdout.

    The server decides when the writer ends (by closing its stdin, or by
    dying): a SIGTERM or Ctrl-C meant for the server does not cut a batch short.
    """
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    serve_writer()


if __name__ == "__main__":
    main()
