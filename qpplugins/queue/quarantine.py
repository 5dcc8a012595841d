"""queue/quarantine: file the messages a scanner marked for quarantine, instead of delivering them.

List it before the real queue plugin (as Haraka's ``quarantine``). A
message is marked by ``transaction.notes["quarantine"]`` (or the connection
note of the same name), which the scanners set: ``milter`` (the milter's
``SMFIR_QUARANTINE``), ``rspamd`` (its ``quarantine`` action),
``spamassassin quarantine SCORE``, ``virus/clamdscan deny_viruses
quarantine``; the note's value is the reason. Other messages go on to the
next queue plugin untouched.

A marked message is written to ``DIR/YYYYMMDD/NAME.eml`` (the date is
UTC, from the engine's clock) with its envelope beside it in
``DIR/YYYYMMDD/NAME.json``: sender, recipients, client address and HELO,
the reason, the time, the Message-Id and the scanners' result notes. Both
are written to ``DIR/tmp/``, fsynced, then linked into the dated directory
(the message first, the envelope last) and the directory fsynced, all on
the engine's thread pool: an envelope file present means a complete
message. Files that a crashed process left in ``DIR/tmp/`` are removed at
start (only those of processes that no longer run).

With ``action hold`` (default) the client gets ``250`` once both files are
on disk and the message goes no further; ``action copy`` files a copy and
lets the next queue plugin deliver it. If filing fails the client gets
``452`` (try again later), in both modes.

Arguments: ``[DIR]`` (default ``spool/quarantine``, relative to the
directory the server was started in), ``action hold|copy``, ``mode``
(octal file mode, default 0600).

config/plugins::

    queue/quarantine /var/spool/qpsmtpd/quarantine
    queue/maildir /var/mail/domains %d/%l
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.python.failure import Failure

from qptwisted import DECLINED, DENYSOFT, LOGERROR, LOGINFO, OK, HookAnswer, Plugin, Transaction, arg
from qptwisted.lib.maildir import fsync_dir, maildir_name

_TMP_PREFIX = "qptquar"


def _write(path: str, chunks: Iterable[bytes], mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())


def file_message(directory: str, day: str, message: Callable[[], Iterable[bytes]], envelope: bytes,
                 mode: int = 0o600) -> str:
    """Write one message and its envelope into ``directory/day``; all or nothing. Blocking.

    Returns the path of the message file.
    """
    tmp = os.path.join(directory, "tmp")
    target = os.path.join(directory, day)
    os.makedirs(tmp, mode=0o700, exist_ok=True)
    os.makedirs(target, mode=0o700, exist_ok=True)
    name = maildir_name()
    staged = {ext: os.path.join(tmp, f"{_TMP_PREFIX}.{os.getpid()}.{name}.{ext}") for ext in ("eml", "json")}
    final = {ext: os.path.join(target, f"{name}.{ext}") for ext in ("eml", "json")}
    linked: list[str] = []
    try:
        _write(staged["eml"], message(), mode)
        _write(staged["json"], [envelope], mode)
        for ext in ("eml", "json"):  # the envelope last: its presence means the message is complete
            os.link(staged[ext], final[ext])
            linked.append(final[ext])
        fsync_dir(target)
        return final["eml"]
    except BaseException:
        for path in linked:
            _unlink(path)
        raise
    finally:
        for path in staged.values():
            _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_stale(directory: str) -> list[str]:
    """Remove the files that processes no longer running left in ``directory/tmp``."""
    removed: list[str] = []
    tmp = os.path.join(directory, "tmp")
    try:
        names = os.listdir(tmp)
    except OSError:
        return removed
    for name in names:
        prefix, _, rest = name.partition(".")
        pid = rest.partition(".")[0]
        if prefix != _TMP_PREFIX or not pid.isdigit() or _running(int(pid)):
            continue
        _unlink(os.path.join(tmp, name))
        removed.append(name)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _jsonable(value: Any) -> Any:
    """Notes as JSON can hold them (anything else as text)."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class Quarantine(Plugin):
    """File quarantined messages by date, with their envelope."""

    name = "queue/quarantine"

    directory: Path = arg.path("spool/quarantine", "the quarantine (dated directories and tmp/ below it)",
                               positional=True, workdir=True)
    action: str = arg.choice(("hold", "copy"), "hold", "hold: 250 and deliver nothing more; copy: file a "
                             "copy and let the next queue plugin deliver")
    mode: int = arg.octal(0o600, "file mode of the quarantined files")

    def register(self, *args: str) -> None:
        """Clear what a crashed process left in tmp/."""
        removed = remove_stale(str(self.directory))
        if removed:
            self.log(LOGINFO, f"removed {len(removed)} stale files from {self.directory}/tmp")

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        reason = transaction.notes.get("quarantine") or transaction.connection.notes.get("quarantine")
        if not reason:
            return DECLINED
        now = self.clock.seconds()
        envelope = json.dumps(self.envelope(transaction, str(reason), now), indent=1).encode() + b"\n"
        day = time.strftime("%Y%m%d", time.gmtime(now))
        message_id = transaction.message_id or ""

        def filed(path: str) -> HookAnswer:
            transaction.notes["quarantined"] = path
            self.log(LOGINFO, f"quarantined ({reason}): {path}")
            if self.action == "copy":
                return DECLINED
            return OK, f"Queued! {message_id}".rstrip()

        def failed(failure: Failure) -> HookAnswer:
            self.log(LOGERROR, f"cannot quarantine: {failure.getErrorMessage() or repr(failure.value)}")
            return DENYSOFT, "Queue error, try again later (#4.3.0)"

        deferred = self.defer_to_thread(file_message, str(self.directory), day, transaction.iter_message,
                                        envelope, self.mode)
        return deferred.addCallbacks(filed, failed)

    @staticmethod
    def envelope(transaction: Transaction, reason: str, now: float) -> dict[str, Any]:
        """What the side file says about the message."""
        connection = transaction.connection
        scans = {key: value for key, value in transaction.notes.items()
                 if isinstance(value, dict) and "daemon" in value}
        return {
            "reason": reason,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "sender": str(transaction.sender) if transaction.sender is not None else None,
            "recipients": [rcpt.address for rcpt in transaction.recipients],
            "client_ip": connection.remote_ip,
            "client_host": connection.remote_host,
            "helo": connection.hello_host,
            "auth_user": connection.auth_user,
            "message_id": transaction.message_id,
            "size": len(transaction.header_bytes()) + transaction.body_length,
            "scans": _jsonable(scans),
        }
