"""queue/quarantine: marked messages filed by date with their envelope, atomically; others pass."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from qpplugins.queue.quarantine import remove_stale
from qptwisted import DENYSOFT, OK
from qptwisted.testing import make_engine, make_transaction, run_hook

MESSAGE = b"From: alice@example.org\nSubject: suspicious\nMessage-Id: <q.1@example.org>\n\nbody\n"
#: 2026-11-29 12:00:00 UTC
NOON = 1795953600.0


class QuarantineTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()

    def engine(self, *args: str) -> Any:
        engine = make_engine([" ".join(["queue/quarantine", str(self.directory), *args]), "queue/discard"],
                             config={"size_threshold": "16"})
        engine.clock.advance(NOON)
        return engine

    def transaction(self, engine: Any, reason: str | None = "clamd: Eicar") -> Any:
        transaction = make_transaction(engine, sender="<alice@example.org>", message=MESSAGE,
                                       recipients=["<bob@example.com>", "<carol@example.com>"])
        if reason is not None:
            transaction.notes["quarantine"] = reason
            transaction.notes["virus/clamdscan"] = {"result": "virus", "daemon": "clamd", "virus": "Eicar"}
        self.addCleanup(transaction.close)
        return transaction

    def filed(self) -> list[Path]:
        return sorted((self.directory / "20261129").iterdir())

    def test_marked_message_is_filed_with_its_envelope_and_held(self) -> None:
        engine = self.engine()
        transaction = self.transaction(engine)
        result = self.successResultOf(run_hook(engine, "queue", transaction))
        self.assertEqual((result.code, result.message, result.plugin),
                         (OK, "Queued! <q.1@example.org>", "queue/quarantine"))
        eml, envelope = self.filed()
        self.assertEqual((eml.suffix, envelope.suffix, eml.stem), (".eml", ".json", envelope.stem))
        self.assertEqual(eml.read_bytes(), transaction.message_bytes())
        self.assertEqual(eml.stat().st_mode & 0o777, 0o600)
        data = json.loads(envelope.read_text())
        self.assertEqual(data["reason"], "clamd: Eicar")
        self.assertEqual(data["time"], "2026-11-29T12:00:00Z")
        self.assertEqual((data["sender"], data["recipients"]), ("<alice@example.org>",
                                                                ["bob@example.com", "carol@example.com"]))
        self.assertEqual((data["client_ip"], data["message_id"]), ("192.0.2.1", "<q.1@example.org>"))
        self.assertEqual(data["scans"]["virus/clamdscan"]["virus"], "Eicar")
        self.assertEqual(os.listdir(self.directory / "tmp"), [])
        self.assertEqual(transaction.notes["quarantined"], str(eml))

    def test_copy_files_and_lets_the_next_queue_deliver(self) -> None:
        engine = self.engine("action", "copy")
        result = self.successResultOf(run_hook(engine, "queue", self.transaction(engine)))
        self.assertEqual((result.code, result.plugin), (OK, "queue/discard"))
        self.assertEqual(len(self.filed()), 2)

    def test_unmarked_message_goes_on(self) -> None:
        engine = self.engine()
        result = self.successResultOf(run_hook(engine, "queue", self.transaction(engine, None)))
        self.assertEqual(result.plugin, "queue/discard")
        self.assertFalse(self.directory.exists() and any((self.directory).glob("2*")))

    def test_connection_note_marks_too(self) -> None:
        engine = self.engine()
        transaction = self.transaction(engine, None)
        transaction.connection.notes["quarantine"] = "karma"
        result = self.successResultOf(run_hook(engine, "queue", transaction))
        self.assertEqual(result.plugin, "queue/quarantine")

    def test_failure_to_file_is_a_temporary_refusal_and_leaves_nothing(self) -> None:
        engine = self.engine()
        self.directory.mkdir(parents=True)
        (self.directory / "20261129").write_text("a file where the directory should be")
        result = self.successResultOf(run_hook(engine, "queue", self.transaction(engine)))
        self.assertEqual((result.code, result.message), (DENYSOFT, "Queue error, try again later (#4.3.0)"))
        self.assertEqual(os.listdir(self.directory / "tmp"), [])

    def test_leftovers_of_dead_processes_are_removed_at_start(self) -> None:
        tmp = self.directory / "tmp"
        tmp.mkdir(parents=True)
        mine = tmp / f"qptquar.{os.getpid()}.x.eml"
        dead = tmp / "qptquar.999999999.y.eml"
        other = tmp / "unrelated"
        for path in (mine, dead, other):
            path.write_text("x")
        self.assertEqual(remove_stale(str(self.directory)), ["qptquar.999999999.y.eml"])
        self.engine()
        self.assertEqual(sorted(os.listdir(tmp)), [mine.name, "unrelated"])

    async def test_large_message_streams_from_the_spool_on_a_thread(self) -> None:
        engine = make_engine([f"queue/quarantine {self.directory}"], config={"size_threshold": "1024"},
                             clock=reactor)
        self.addCleanup(engine.close)
        big = MESSAGE + b"y" * 300_000 + b"\n"
        transaction = make_transaction(engine, sender="<a@example.org>", recipients=["<b@example.com>"],
                                       message=big)
        self.addCleanup(transaction.close)
        transaction.notes["quarantine"] = "test"
        self.assertIsNotNone(transaction.body.filename)
        result = await run_hook(engine, "queue", transaction)
        self.assertEqual(result.code, OK)
        [eml] = [path for path in self.directory.glob("*/*.eml")]
        self.assertEqual(eml.read_bytes(), transaction.message_bytes())
