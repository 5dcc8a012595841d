"""Group commit of Maildir directory fsyncs: shared by concurrent deliveries, never skipped."""

from __future__ import annotations

import threading

from twisted.trial import unittest

from qptwisted.lib.maildir import GroupCommit


class GroupCommitTests(unittest.TestCase):
    def test_waiters_share_the_next_fsync_and_none_returns_early(self) -> None:
        started, release = threading.Event(), threading.Event()
        synced: list[str] = []
        returned: list[int] = []

        def slow_sync(directory: str) -> None:
            started.set()
            release.wait(10)
            synced.append(directory)

        commit = GroupCommit(slow_sync)
        first = threading.Thread(target=lambda: (commit.durable("d"), returned.append(0)))
        first.start()
        self.assertTrue(started.wait(10))  # the first fsync runs; these link meanwhile:
        later = [threading.Thread(target=lambda n=n: (commit.durable("d"), returned.append(n)))
                 for n in range(1, 8)]
        for thread in later:
            thread.start()
        for _ in range(1000):  # until all seven have linked and wait
            if commit._linked.get("d") == 8:
                break
            threading.Event().wait(0.01)
        self.assertEqual(returned, [])  # nobody is answered before an fsync that covers its link
        started.clear()
        release.set()
        for thread in [first, *later]:
            thread.join(10)
        self.assertEqual(sorted(returned), list(range(8)))
        self.assertLessEqual(commit.syncs, 2)  # one for the first, one shared by the seven others
        self.assertGreaterEqual(commit.syncs, 2)  # the seven linked after the first fsync began

    def test_a_failed_fsync_fails_its_delivery_and_the_next_one_retries(self) -> None:
        calls: list[int] = []

        def flaky(directory: str) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise OSError("EIO")

        commit = GroupCommit(flaky)
        with self.assertRaises(OSError):
            commit.durable("d")
        commit.durable("d")
        self.assertEqual(len(calls), 2)
