"""Message body storage: in memory up to a threshold, then a private file."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

#: spool file names are ``PREFIX.<pid>.<random>``: ours to remove even in a shared directory such as /tmp
PREFIX = "qptmsg"


class MessageSpool:
    """An append-only byte store for one message body.

    Bytes stay in memory until ``threshold`` is passed, then everything moves
    to a mode-0600 file ``qptmsg.<pid>.<random>`` in ``directory``. The file is
    removed by :meth:`close` (the transaction calls it when it ends), so
    nothing half-written stays; the files of a process that died without
    closing them are removed by :func:`remove_orphans` at the next start.
    """

    __slots__ = ("directory", "threshold", "size", "_chunks", "_file", "filename")

    def __init__(self, directory: str, threshold: int) -> None:
        self.directory = directory
        self.threshold = threshold
        self.size = 0
        self._chunks: list[bytes] = []
        self._file: BinaryIO | None = None
        self.filename: str | None = None

    def write(self, data: bytes) -> None:
        """Append ``data``; may move the spool to disk (``OSError`` propagates)."""
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._chunks.append(data)
        if self.size > self.threshold:
            self.to_file()

    def to_file(self) -> str:
        """Force the body into a file and return its name."""
        if self._file is None:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd, self.filename = tempfile.mkstemp(prefix=f"{PREFIX}.{os.getpid()}.", dir=self.directory)
            self._file = os.fdopen(fd, "w+b")
            self._file.writelines(self._chunks)
            self._chunks = []
        assert self.filename is not None
        self._file.flush()
        return self.filename

    def getvalue(self) -> bytes:
        """The whole body as bytes (reads the file if the body is on disk)."""
        if self._file is None:
            if len(self._chunks) > 1:
                self._chunks = [b"".join(self._chunks)]
            return self._chunks[0] if self._chunks else b""
        with self.open() as handle:
            return handle.read()

    def open(self) -> BinaryIO:
        """A new read handle positioned at the start of the body."""
        if self._file is None:
            return io.BytesIO(self.getvalue())
        self._file.flush()
        assert self.filename is not None
        return open(self.filename, "rb")

    def iter_chunks(self, size: int = 1 << 16) -> Iterator[bytes]:
        """The body in chunks of at most ``size`` bytes, without loading it whole."""
        if self._file is None:
            yield from self._chunks
            return
        with self.open() as handle:
            while chunk := handle.read(size):
                yield chunk

    def close(self) -> None:
        """Drop the body and remove its file."""
        self._chunks = []
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.filename is not None:
            try:
                os.unlink(self.filename)
            except FileNotFoundError:
                pass
            self.filename = None


def remove_orphans(directory: str) -> list[str]:
    """Delete the spool files of processes that are gone (a crash, SIGKILL); return their paths.

    Only ``qptmsg.<pid>.*`` files whose process no longer runs are touched, so
    other workers and other servers sharing ``directory`` keep theirs.
    """
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        prefix, _, rest = name.partition(".")
        pid = rest.partition(".")[0]
        if prefix != PREFIX or not pid.isdigit() or int(pid) == os.getpid() or _running(int(pid)):
            continue
        path = os.path.join(directory, name)
        try:
            os.unlink(path)
        except OSError:
            continue
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True
