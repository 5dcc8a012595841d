"""queue/maildir: durable, all-or-nothing delivery into one or more Maildirs.

The plugin writes through the engine's Maildir writer process (small
messages) or its thread pool (large ones), so these tests run on the real
reactor, return Deferreds and close their engines (which stops the writer).
"""

from __future__ import annotations

import os
import select
import signal
import stat
import sys
import threading
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial import unittest

from qptwisted import DENYSOFT, OK, Address, ConfigError, Plugin, Transaction
from qptwisted.lib import maildir as maildir_module
from qptwisted.lib.maildir_writer import MaildirWriter, frame, unframe, write_in_process, writer_for
from qptwisted.testing import SMTPDialogue, make_engine, make_transaction, run_hook

MESSAGE = b"From: a@example.org\nSubject: hello\nMessage-Id: <m1@example.org>\n\nBody line.\n"


class QueueDone(Plugin):
    """Fires ``done`` from ``queue_post``, i.e. after the queue reply was written."""

    def register(self, *args: str) -> None:
        self.done: Deferred[None] = Deferred()

    def hook_queue_post(self, transaction: Transaction) -> None:
        done, self.done = self.done, Deferred()
        done.callback(None)


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


class MaildirBase(unittest.TestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()

    def engine(self, arguments: str = "", *extra: Any, **config: Any) -> Any:
        engine = make_engine(["rcpt_ok", f"queue/maildir {self.base} {arguments}".strip(), *extra],
                             config={"rcpthosts": ["example.com", "example.org"], **config}, clock=reactor)
        self.addCleanup(engine.close)
        return engine

    def queue(self, engine: Any, recipients: list[str], message: bytes = MESSAGE) -> Deferred[Any]:
        transaction = make_transaction(engine, sender="<a@example.org>", recipients=recipients,
                                       message=message)
        self.addCleanup(transaction.close)
        return run_hook(engine, "queue", transaction)


class MaildirDeliveryTests(MaildirBase):
    @inlineCallbacks
    def test_dialogue_reply_and_stored_message(self) -> Any:
        engine = make_engine(["rcpt_ok", f"queue/maildir {self.base}", QueueDone], clock=reactor)
        self.addCleanup(engine.close)
        done = engine.plugins[-1].done  # type: ignore[attr-defined]
        smtp = SMTPDialogue(engine)
        self.addCleanup(smtp.close)
        replies = smtp.deliver("<a@example.org>", ["<bob@mx.test>"], MESSAGE)
        self.assertEqual(replies[-1][0], 354)  # the 250 waits for the disk
        yield done
        self.assertEqual(smtp.replies(), [(250, "2.6.0", "Queued! <m1@example.org>")])
        [stored] = files(self.base / "new")
        self.assertEqual(files(self.base / "tmp"), [])
        self.assertTrue((self.base / "cur").is_dir())
        raw = stored.read_bytes()
        self.assertTrue(raw.startswith(b"Return-Path: <a@example.org>\nDelivered-To: bob@mx.test\n"))
        parsed = BytesParser().parsebytes(raw)
        self.assertIn("(HELO client.test)", parsed["Received"])
        self.assertEqual(parsed["Subject"], "hello")
        self.assertTrue(raw.endswith(b"\n\nBody line.\n"))
        self.assertEqual(stat.S_IMODE(stored.stat().st_mode), 0o600)

    @inlineCallbacks
    def test_message_without_message_id(self) -> Any:
        result = yield self.queue(self.engine(), ["<b@example.com>"], b"Subject: x\n\nhi\n")
        self.assertEqual((result.code, result.message), (OK, "Queued!"))

    @inlineCallbacks
    def test_file_mode_argument(self) -> Any:
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        result = yield self.queue(self.engine("0640"), ["<b@example.com>"])
        self.assertEqual(result.code, OK)
        [stored] = files(self.base / "new")
        self.assertEqual(stat.S_IMODE(stored.stat().st_mode), 0o640)

    @inlineCallbacks
    def test_delivered_to_order_and_one_copy_per_directory(self) -> Any:
        result = yield self.queue(self.engine(), ["<a@example.com>", "<b@example.com>", "<c@example.org>"])
        self.assertEqual(result.code, OK)
        [stored] = files(self.base / "new")
        parsed = BytesParser().parsebytes(stored.read_bytes())
        # each recipient's Delivered-To goes on top, as qpsmtpd's header->add(..., 0) does
        self.assertEqual(parsed.get_all("Delivered-To"), ["c@example.org", "b@example.com", "a@example.com"])
        self.assertEqual(result.message, "Queued! <m1@example.org>")

    @inlineCallbacks
    def test_pattern_gives_each_recipient_a_directory(self) -> Any:
        engine = self.engine("%d/%l")
        result = yield self.queue(engine, ["<Bob@Example.COM>", "<carol@example.org>", "<bob@example.com>"])
        self.assertEqual(result.code, OK)
        [bob] = files(self.base / "example.com" / "bob" / "new")
        [carol] = files(self.base / "example.org" / "carol" / "new")
        bob_header = BytesParser().parsebytes(bob.read_bytes())
        self.assertEqual(bob_header.get_all("Delivered-To"), ["bob@example.com", "Bob@Example.COM"])
        self.assertEqual(BytesParser().parsebytes(carol.read_bytes()).get_all("Delivered-To"),
                         ["carol@example.org"])
        self.assertEqual(sorted(p.name for p in self.base.iterdir()), ["example.com", "example.org"])

    def test_directory_is_required(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            make_engine(["queue/maildir"])
        self.assertIn("queue/maildir", str(raised.exception))


class MaildirAllOrNothingTests(MaildirBase):
    def assertNothingDelivered(self) -> None:
        for new in self.base.rglob("new"):
            self.assertEqual(files(new), [], new)
        for tmp in self.base.rglob("tmp"):
            self.assertEqual(files(tmp), [], tmp)

    @inlineCallbacks
    def test_second_rename_fails(self) -> Any:
        real_rename = os.rename
        calls: list[str] = []

        def rename(source: str, target: str) -> None:
            if os.path.basename(os.path.dirname(target)) != "new":  # e.g. the plugin cache
                return real_rename(source, target)
            calls.append(target)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            real_rename(source, target)

        self.patch(os, "rename", rename)
        # this process's os.rename fails: the delivery is written here, not in the writer process
        self.patch(maildir_module, "writer_for", lambda engine, fallback: None)
        engine = self.engine("%d", QueueDone)
        done = engine.plugins[-1].done  # type: ignore[attr-defined]
        smtp = SMTPDialogue(engine)
        self.addCleanup(smtp.close)
        replies = smtp.deliver("<a@example.org>", ["<b@example.com>", "<c@example.org>"], MESSAGE)
        yield done
        replies += smtp.replies()  # a small message fails while it is written, a large one later
        self.assertEqual(replies[-1], (452, "4.3.0", "Queue error, try again later (#4.3.0)"))
        self.assertEqual(len(calls), 2)  # the first copy was in new/ and was taken back
        self.assertNothingDelivered()

    @inlineCallbacks
    def test_unwritable_second_directory(self) -> Any:
        self.base.mkdir(parents=True)
        (self.base / "example.org").write_text("a file where a Maildir should be\n")
        result = yield self.queue(self.engine("%d"), ["<b@example.com>", "<c@example.org>"])
        self.assertEqual(result.code, DENYSOFT)
        self.assertNothingDelivered()
        self.assertTrue((self.base / "example.org").is_file())
        self.flushLoggedErrors()


class MaildirWriterTests(MaildirBase):
    """Small messages are written, renamed and synced by the engine's Maildir writer process."""

    def writer(self, engine: Any) -> MaildirWriter:
        writer = writer_for(engine, maildir_module.write_here)
        assert writer is not None
        return writer

    @inlineCallbacks
    def test_one_writer_process_writes_every_small_delivery(self) -> Any:
        engine = self.engine()
        first = yield self.queue(engine, ["<b@example.com>"])
        pid = self.writer(engine).pid
        second = yield self.queue(engine, ["<c@example.com>"])
        self.assertEqual((first.code, second.code), (OK, OK))
        self.assertEqual(self.writer(engine).pid, pid)
        self.assertNotIn(pid, (None, os.getpid()))
        stored = files(self.base / "new")
        self.assertEqual(len(stored), 2)
        for path in stored:  # a Maildir name carries the pid of the process that wrote it
            self.assertIn(f"P{pid}Q", path.name)
            self.assertTrue(path.read_bytes().endswith(b"\n\nBody line.\n"))
        self.assertEqual(files(self.base / "tmp"), [])

    @inlineCallbacks
    def test_closing_the_engine_stops_the_writer(self) -> Any:
        engine = self.engine()
        yield self.queue(engine, ["<b@example.com>"])
        writer = self.writer(engine)
        pid = writer.pid
        assert pid is not None
        yield engine.close()
        self.assertIsNone(writer.pid)
        with self.assertRaises(ProcessLookupError):  # gone and reaped
            os.kill(pid, 0)

    @inlineCallbacks
    def test_a_writer_that_dies_fails_what_it_held_and_the_next_delivery_starts_another(self) -> Any:
        engine = self.engine()
        yield self.queue(engine, ["<b@example.com>"])
        pid = self.writer(engine).pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        held = self.queue(engine, ["<c@example.com>"])
        os.kill(pid, signal.SIGKILL)
        result = yield held
        self.assertEqual(result.code, DENYSOFT)
        result = yield self.queue(engine, ["<d@example.com>"])
        self.assertEqual(result.code, OK)
        self.assertNotIn(self.writer(engine).pid, (None, pid))
        self.assertEqual([b"b@example.com" in path.read_bytes() or b"d@example.com" in path.read_bytes()
                          for path in files(self.base / "new")], [True, True])

    @inlineCallbacks
    def test_a_writer_that_cannot_start_leaves_the_writing_to_the_server(self) -> Any:
        self.patch(MaildirWriter, "command", (sys.executable, "-c", "raise SystemExit(3)"))
        engine = self.engine()
        logged: list[str] = []
        real_log = engine.log
        self.patch(engine, "log", lambda level, message, **kw: (logged.append(message),
                                                                  real_log(level, message, **kw)))
        results = yield gatherResults([self.queue(engine, ["<b@example.com>"]),
                                       self.queue(engine, ["<c@example.com>"])])
        self.assertEqual([result.code for result in results], [OK, OK])
        self.assertIsNone(writer_for(engine, maildir_module.write_here))  # no second attempt
        result = yield self.queue(engine, ["<d@example.com>"])
        self.assertEqual(result.code, OK)
        stored = files(self.base / "new")
        self.assertEqual(len(stored), 3)
        self.assertTrue(all(f"P{os.getpid()}Q" in path.name for path in stored))
        self.assertTrue(any(line.startswith("maildir writer exited before it was ready") for line in logged),
                        logged)

    @inlineCallbacks
    def test_an_engine_told_to_write_in_process_starts_no_writer(self) -> Any:
        engine = self.engine()
        write_in_process(engine)  # what `qpsmtpd inetd` does for its one session
        result = yield self.queue(engine, ["<b@example.com>"])
        self.assertEqual(result.code, OK)
        self.assertIsNone(writer_for(engine, maildir_module.write_here))
        [stored] = files(self.base / "new")
        self.assertIn(f"P{os.getpid()}Q", stored.name)

    def test_a_failed_sync_fails_the_whole_batch_and_takes_it_back(self) -> None:
        base = Path(self.mktemp()).resolve()
        (base / "blocked").parent.mkdir(parents=True)
        (base / "blocked").write_text("a file where a Maildir should be\n")

        def failing_sync(directory: str) -> None:
            raise OSError(5, "Input/output error")

        head = [b"Return-Path: <a@example.org>\n"]
        requests = [(1, 0o600, [(str(base / "one"), head)], MESSAGE),
                    (2, 0o600, [(str(base / "blocked"), head)], MESSAGE),
                    (3, 0o600, [(str(base / "one"), head), (str(base / "two"), head)], MESSAGE)]
        answers, rest = unframe(maildir_module._sync(maildir_module._write(requests)))
        self.assertEqual(rest, b"")
        delivered = [(number, len(paths)) for number, paths, _error in answers if paths]
        self.assertEqual(delivered, [(1, 1), (3, 2)])
        self.assertIsNotNone(answers[1][2])  # that one failed alone; the batch was synced
        self.assertEqual(len(files(base / "one" / "new")), 2)

        self.patch(maildir_module, "syncfs", failing_sync)
        answers, _rest = unframe(maildir_module._sync(maildir_module._write(requests)))
        self.assertEqual([paths for _number, paths, _error in answers], [None, None, None])
        self.assertEqual(answers[0][2], "sync failed: [Errno 5] Input/output error")
        self.assertEqual(len(files(base / "one" / "new")), 2)  # only what the first batch delivered
        self.assertEqual(len(files(base / "two" / "new")), 1)
        for tmp in base.rglob("tmp"):
            self.assertEqual(files(tmp), [])


class WriterLoopTests(unittest.TestCase):
    """The writer's loop (:func:`serve_writer`), run on pipes in a thread: which deliveries share a sync."""

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.syncs: list[str] = []
        self.patch(maildir_module, "syncfs", self.syncs.append)
        self.requests_out, self.requests_in = os.pipe()
        self.answers_out, self.answers_in = os.pipe()
        self.loop = threading.Thread(target=maildir_module.serve_writer,
                                     args=(self.requests_out, self.answers_in), daemon=True)
        self.addCleanup(self._stop)

    def _stop(self) -> None:
        os.close(self.requests_in)  # the writer's end of input: its loop returns
        if self.loop.ident is not None:  # it was started
            self.loop.join(10)
            self.assertFalse(self.loop.is_alive())
        for fd in (self.requests_out, self.answers_out, self.answers_in):
            os.close(fd)

    def request(self, number: int) -> bytes:
        return frame((number, 0o600, [(str(self.base), [b"Return-Path: <a@example.org>\n"])], MESSAGE))

    def answers(self, count: int) -> list[Any]:
        """The next ``count`` answers (the READY frame first of all is skipped)."""
        found: list[Any] = []
        buffer = b""
        while len(found) < count:
            self.assertTrue(select.select([self.answers_out], [], [], 10)[0], "the writer did not answer")
            frames, buffer = unframe(buffer + os.read(self.answers_out, 1 << 16))
            found += [answer for answer in frames if answer != maildir_module.READY]
        return found

    def arriving_while_writing(self) -> None:
        """The second delivery arrives while the first is being written."""
        write = maildir_module._write

        def write_then_receive(requests: list[Any]) -> list[Any]:
            if requests[0][0] == 1:
                os.write(self.requests_in, self.request(2))
            return write(requests)

        self.patch(maildir_module, "_write", write_then_receive)
        self.loop.start()
        os.write(self.requests_in, self.request(1))

    def test_a_delivery_arriving_while_others_are_written_shares_their_sync(self) -> None:
        self.arriving_while_writing()
        answers = self.answers(2)
        self.assertEqual([(number, len(paths), error) for number, paths, error in answers],
                         [(1, 1, None), (2, 1, None)])
        self.assertEqual(len(self.syncs), 1)
        self.assertEqual(len(files(self.base / "new")), 2)

    def test_a_batch_stops_growing_at_its_limit(self) -> None:
        self.patch(maildir_module, "_BATCH_LIMIT", 1)
        self.arriving_while_writing()
        self.assertEqual([answer[0] for answer in self.answers(2)], [1, 2])
        self.assertEqual(len(self.syncs), 2)


class MaildirDurabilityTests(unittest.TestCase):
    """The order of the steps, checked on :func:`deliver` itself (synchronously)."""

    def test_tmp_fsync_rename_dirsync_order(self) -> None:
        base = Path(self.mktemp()).resolve()
        events: list[tuple[str, str]] = []
        real_fsync, real_rename, real_unlink = os.fsync, os.rename, os.unlink

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.isfile(path):
                # the data is synced while the message is still only in tmp/
                self.assertEqual(files(base / "new"), [])
                self.assertEqual(os.path.basename(os.path.dirname(path)), "tmp")
                self.assertEqual(Path(path).read_bytes().count(b"Body line."), 1)
            events.append(("fsync", "file" if os.path.isfile(path) else os.path.basename(path)))
            real_fsync(fd)

        def rename(source: str, target: str) -> None:
            events.append(("rename", f"{Path(source).parent.name}->{Path(target).parent.name}"))
            real_rename(source, target)

        def unlink(path: str) -> None:
            events.append(("unlink", Path(path).parent.name))
            real_unlink(path)

        if not os.path.isdir("/proc/self/fd"):
            raise unittest.SkipTest("needs /proc/self/fd")
        self.patch(os, "fsync", fsync)
        self.patch(os, "rename", rename)
        self.patch(os, "unlink", unlink)
        chunks = [b"Subject: x\n\n", b"Body line.\n"]
        [path] = maildir_module.deliver({str(base): [Address.parse("<b@example.com>")]},
                                        Address.parse("<a@example.org>"), lambda: chunks, 0o600,
                                        sync="fsync")
        self.assertEqual(events, [("fsync", "file"), ("rename", "tmp->new"), ("fsync", "new")])
        self.assertEqual(Path(path).parent, base / "new")
        self.assertEqual(Path(path).read_bytes(),
                         b"Return-Path: <a@example.org>\nDelivered-To: b@example.com\n"
                         b"Subject: x\n\nBody line.\n")
        self.assertEqual(files(base / "tmp"), [])

    def test_syncfs_mode_syncs_the_filesystem_after_the_rename(self) -> None:
        if "syncfs" not in maildir_module.SYNC_MODES:
            raise unittest.SkipTest("syncfs is Linux's")
        base = Path(self.mktemp()).resolve()
        events: list[str] = []
        real_rename = os.rename

        def rename(source: str, target: str) -> None:
            events.append("rename")
            real_rename(source, target)

        self.patch(os, "fsync", lambda fd: events.append("fsync"))
        self.patch(os, "rename", rename)
        commit = maildir_module.GroupCommit(lambda path: events.append(f"syncfs {Path(path).name}"))
        self.patch(maildir_module, "FILESYSTEM_COMMIT", commit)
        [path] = maildir_module.deliver({str(base): [Address.parse("<b@example.com>")]},
                                        Address.parse("<a@example.org>"), lambda: [b"Subject: x\n\nhi\n"],
                                        sync="syncfs")
        self.assertEqual(events, ["rename", "syncfs new"])  # no fsync per file: one filesystem sync after
        self.assertTrue(Path(path).is_file())

    def test_unique_names(self) -> None:
        names = {maildir_module.maildir_name() for _ in range(1000)}
        self.assertEqual(len(names), 1000)
        self.assertFalse(any("/" in name or ":" in name for name in names))
