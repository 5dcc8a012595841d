"""Noticing that files changed, once they have stopped changing (certificates renewed by ACME).

:class:`FileWatch` is polled (``engine.call_every``): polling works the same
on every file system, NFS and rsync included, and a few ``stat`` calls every
few seconds cost nothing. A file's signature is its device, inode, size and
modification time *through* symbolic links, so certbot's ``live/`` links
that are switched to new files count as a change.

A change is acted on only when two polls in a row see the same new
signature: a file being written (a renew hook copying the certificate, then
the key) is left alone until it is still. The callback then tries the new
files; if it fails (a half-written or mismatched file) the same signature is
not tried again, so a broken file is reported once, and the next change is
tried afresh.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

Signature = tuple[tuple[str, tuple[int, int, int, int] | None], ...]


def signature(paths: Iterable[Path]) -> Signature:
    """What the files (and the ``*.pem`` files in directories) look like now."""
    seen: list[tuple[str, tuple[int, int, int, int] | None]] = []
    for path in paths:
        targets = [path]
        if path.is_dir():
            try:
                targets = sorted(p for p in path.iterdir() if p.suffix == ".pem")
            except OSError:
                targets = []
            seen.append((str(path), None))
        for target in targets:
            try:
                st = os.stat(target)
            except OSError:
                seen.append((str(target), None))
                continue
            seen.append((str(target), (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)))
    return tuple(seen)


class FileWatch:
    """Calls ``reload`` when ``paths`` changed and then held still for one poll.

    ``reload`` returns True when it took the new files. :meth:`poll` is the
    periodic call.
    """

    def __init__(self, paths: Iterable[Path], reload: Callable[[], bool]) -> None:
        self.paths = [Path(p) for p in paths]
        self.reload = reload
        self.current = signature(self.paths)
        self._pending: Signature | None = None
        self._refused: Signature | None = None

    def poll(self) -> None:
        """Look at the files once."""
        now = signature(self.paths)
        if now == self.current or now == self._refused:
            self._pending = None
            return
        if now != self._pending:
            self._pending = now  # changed since the last look: wait until it holds still
            return
        self._pending = None
        if self.reload():
            self.current = now
            self._refused = None
        else:
            self._refused = now


__all__ = ["FileWatch", "signature"]
