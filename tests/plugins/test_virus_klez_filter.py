"""virus/klez_filter: the Klez signature in a large message, and nothing else."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from qptwisted import DECLINED, DENY, ConfigError
from qptwisted.testing import make_engine, make_transaction, run_hook

SIGNATURE = b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQA" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
FILLER = b"A" * 76 + b"\n"


def klez(part_type: bytes = b"audio/x-wav", first: bytes = b"", size: int = 70_000) -> bytes:
    """A message shaped like Klez: a MIME part header, then the base64 of a Windows executable."""
    body = (first + b"--b\nContent-Type: " + part_type + b"; name=\"x.exe\"\n"
            b"Content-Transfer-Encoding: base64\n\n" + SIGNATURE)
    return b"From: a@example.org\nSubject: hi\n\n" + body + FILLER * (size // len(FILLER))


class KlezFilterTests(unittest.TestCase):
    def check(self, message: bytes) -> Any:
        engine = make_engine(["virus/klez_filter"])
        txn = make_transaction(engine, sender="<a@example.org>", recipients=["<b@example.com>"],
                               message=message)
        txn.data_size = len(message)
        return self.successResultOf(run_hook(engine, "data_post", txn))

    def test_klez_is_refused(self) -> None:
        result = self.check(klez())
        self.assertEqual((result.code, result.message), (DENY, "Klez Virus Detected"))
        self.assertEqual(self.check(klez(b"application/octet-stream")).code, DENY)

    def test_small_messages_are_not_looked_at(self) -> None:
        self.assertEqual(self.check(klez(size=1000)).code, DECLINED)

    def test_the_signature_must_follow_an_audio_or_application_part(self) -> None:
        self.assertEqual(self.check(klez(b"text/plain")).code, DECLINED)

    def test_only_the_first_lines_of_the_body_are_read(self) -> None:
        self.assertEqual(self.check(klez(first=FILLER * 45)).code, DECLINED)

    def test_takes_no_arguments(self) -> None:
        with self.assertRaises(ConfigError):
            make_engine(["virus/klez_filter 1"])
