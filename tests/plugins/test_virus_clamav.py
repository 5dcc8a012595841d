"""virus/clamav with the real ClamAV command-line scanner and a signature database written by the test."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.clamav_support import EICAR, SIGNATURE, signatures

CLEAN = b"From: alice@example.org\nSubject: lunch\nMessage-Id: <c-1@example.org>\n\nShall we?\n"


def with_attachment(payload: bytes) -> bytes:
    """A MIME message whose attachment is ``payload`` (base64)."""
    return (b"From: alice@example.org\nSubject: report\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"b1\"\n\n"
            b"--b1\nContent-Type: text/plain\n\nsee attached\n"
            b"--b1\nContent-Type: application/octet-stream; name=\"r.com\"\n"
            b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(payload) + b"--b1--\n")


class ClamScanTests(unittest.TestCase):
    """``clamscan`` from Debian's ``clamav`` package; no signature download is needed."""

    def setUp(self) -> None:
        self.clamscan = shutil.which("clamscan")
        if self.clamscan is None:
            raise unittest.SkipTest("ClamAV's clamscan is not installed (Debian package clamav)")
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        self.database = signatures(self.dir)

    def scan(self, message: bytes, arguments: str = "", line: str | None = None) -> tuple[Any, Any]:
        """Run data_post of ``virus/clamav clamscan_path=... database=... ARGUMENTS`` on ``message``."""
        line = line or f"virus/clamav clamscan_path={self.clamscan} database={self.database} {arguments}"
        engine = make_engine([line], clock=reactor)
        txn = make_transaction(engine, sender="<alice@example.org>", recipients=["<bob@example.com>"],
                               message=message)
        txn.data_size = len(message)
        return run_hook(engine, "data_post", txn), txn

    @defer.inlineCallbacks
    def test_clean_message_is_marked_checked(self) -> Any:
        answer, txn = self.scan(CLEAN)
        result = yield answer
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(txn.header.get("X-Virus-Checked"), "Checked by ClamAV on mx.test")
        self.assertIsNone(txn.header.get("X-Virus-Found"))

    @defer.inlineCallbacks
    def test_virus_gets_headers_by_default(self) -> Any:
        answer, txn = self.scan(CLEAN + EICAR + b"\n")
        result = yield answer
        self.assertEqual(result.code, DECLINED)
        self.assertEqual(txn.header.get("X-Virus-Found"), "Yes")
        self.assertEqual(txn.header.get("X-Virus-Details"), f"{SIGNATURE}.UNOFFICIAL")

    @defer.inlineCallbacks
    def test_virus_in_an_attachment_is_refused_with_action_reject(self) -> Any:
        answer, txn = self.scan(with_attachment(EICAR), "action=reject")
        result = yield answer
        self.assertEqual((result.code, result.message), (DENY, f"Virus Found: {SIGNATURE}.UNOFFICIAL"))

    @defer.inlineCallbacks
    def test_qpsmtpds_leading_path_and_name_value_pairs(self) -> Any:
        answer, _ = self.scan(CLEAN + EICAR, line=f"virus/clamav {self.clamscan} database={self.database} "
                                                 "action=reject max_size=1048576")
        self.assertEqual((yield answer).code, DENY)

    @defer.inlineCallbacks
    def test_a_scanner_that_fails_defers_unless_declined_on_fail(self) -> Any:
        missing = self.dir / "no-such-database"
        answer, txn = self.scan(CLEAN, line=f"virus/clamav clamscan_path={self.clamscan} database={missing}")
        result = yield answer
        self.assertEqual(result.code, DENYSOFT)
        self.assertIsNone(txn.header.get("X-Virus-Checked"))
        answer, _ = self.scan(CLEAN, line=f"virus/clamav clamscan_path={self.clamscan} database={missing} "
                                          "declined_on_fail")
        self.assertEqual((yield answer).code, DECLINED)

    @defer.inlineCallbacks
    def test_larger_messages_than_max_size_are_not_scanned(self) -> Any:
        answer, txn = self.scan(CLEAN + EICAR, "action=reject max_size=40")
        result = yield answer
        self.assertEqual(result.code, DECLINED)
        self.assertIsNone(txn.header.get("X-Virus-Checked"))


class ScannerChoiceTests(unittest.TestCase):
    """Which program runs, with which options; a stuck scanner."""

    def setUp(self) -> None:
        self.bin = Path(self.mktemp()).resolve()
        self.bin.mkdir(parents=True)

    def program(self, name: str, script: str) -> Path:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
        return path

    def test_clamdscan_is_preferred_and_gets_the_config_file(self) -> None:
        self.program("clamdscan", "exit 0")
        self.program("clamscan", "exit 0")
        self.patch(os, "environ", {**os.environ, "PATH": str(self.bin)})
        plugin = make_engine(["virus/clamav clamd_conf=/etc/clamav/clamd.conf database=x.ndb"]).plugins[0]
        self.assertEqual(plugin.argv(), [str(self.bin / "clamdscan"), "--stdout", "--no-summary",
                                         "--config-file=/etc/clamav/clamd.conf", "-"])

    def test_clamscan_gets_the_database(self) -> None:
        self.program("clamscan", "exit 0")
        self.patch(os, "environ", {**os.environ, "PATH": str(self.bin)})
        plugin = make_engine(["virus/clamav database=x.ndb tmp_dir=/tmp back_compat"]).plugins[0]
        self.assertEqual(plugin.argv(), [str(self.bin / "clamscan"), "--stdout", "--no-summary",
                                         "--database=x.ndb", "-"])

    @defer.inlineCallbacks
    def test_a_stuck_scanner_is_killed_on_the_engine_clock(self) -> Any:
        stuck = self.program("clamscan", "exec sleep 600")
        clock = Clock()
        engine = make_engine([f"virus/clamav clamscan_path={stuck} timeout=30"], clock=clock)
        txn = make_transaction(engine, sender="<a@example.org>", recipients=["<b@example.com>"],
                               message=CLEAN)
        answer = run_hook(engine, "data_post", txn)
        self.assertNoResult(answer)
        clock.advance(31)
        result = yield answer
        self.assertEqual(result.code, DENYSOFT)
