"""The body spool: memory, then a private file; the files of dead processes removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

from qptwisted.mail.spool import MessageSpool, remove_orphans


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class SpoolFileTests(unittest.TestCase):
    def test_file_is_named_by_process_and_removed_on_close(self) -> None:
        directory = Path(self.mktemp())
        spool = MessageSpool(str(directory), threshold=4)
        spool.write(b"hello, ")
        spool.write(b"world\n")
        assert spool.filename is not None
        self.assertTrue(os.path.basename(spool.filename).startswith(f"qptmsg.{os.getpid()}."))
        self.assertEqual(spool.getvalue(), b"hello, world\n")
        spool.close()
        self.assertEqual(list(directory.iterdir()), [])


class OrphanTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.dead = self.directory / f"qptmsg.{dead_pid()}.abc"
        names = [f"qptmsg.{os.getpid()}.mine", "qptmsg.1.init", "qptmsg.noPid",
                 f"msg.{dead_pid()}.another-program", "other.file"]
        self.keep = [self.directory / name for name in names]
        for path in [self.dead, *self.keep]:
            path.write_bytes(b"partial body")

    def test_only_files_of_dead_processes_are_removed(self) -> None:
        self.assertEqual(remove_orphans(str(self.directory)), [str(self.dead)])
        self.assertEqual(sorted(self.directory.iterdir()), sorted(self.keep))

    def test_missing_directory(self) -> None:
        self.assertEqual(remove_orphans(str(self.directory / "nowhere")), [])
