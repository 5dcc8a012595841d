"""Any header bytes through the whole chain: a message is stored as received or refused with a 5xx once.

Before: a header line holding \\x0b, \\x0c, \\x1c, \\x1d or \\x1e made the standard
library's parser raise inside queue/maildir whenever a plugin had read the
header; the client got 451 on every retry, for days.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from qptwisted.mail.headers import split_header
from qptwisted.testing import SMTPDialogue, make_engine

# everything but CR and LF (bare ones are refused by design), with the troublemakers made likely
TROUBLE = [b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"=?", b"?=", b"\xc3", b"\xff", b"=?UTF-8?B?",
           b"=?x?Q?=FF", b":", b" ", b"\t", b"\x00"]
VALUE_BYTES = st.one_of(st.sampled_from(TROUBLE), st.binary(min_size=1, max_size=8).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))
NAMES = st.sampled_from([b"Subject", b"From", b"Date", b"To", b"Received", b"Delivered-To", b"X-Odd",
                         b"Message-Id", b"\x0bX", b"Content-Type"])
FIELD = st.tuples(NAMES, st.lists(VALUE_BYTES, max_size=12).map(b"".join),
                  st.lists(st.lists(VALUE_BYTES, min_size=1, max_size=4).map(lambda p: b"\t" + b"".join(p)),
                           max_size=2))


def field_bytes(name: bytes, value: bytes, continuations: list[bytes]) -> bytes:
    return b"".join([name + b": " + value + b"\n", *(line + b"\n" for line in continuations)])


class HeaderFuzzTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="qpt-fuzz-"))
        self.addCleanup(shutil.rmtree, self.base, True)
        self.smtp = SMTPDialogue(make_engine(
            ["loop 100", "headers require From,Date future 2 past 30", "block_subject all", "rcpt_ok",
             f"queue/maildir {self.base}"], config={"rcpthosts": "example.com"}))
        self.addCleanup(self.smtp.close)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(FIELD, max_size=8))
    def test_never_a_4xx_and_stored_as_received(self, fields: list[tuple[bytes, bytes, list[bytes]]]) -> None:
        header = b"".join(field_bytes(*field) for field in fields)
        message = b"From: a@example.org\nDate: Thu, 01 Jan 2026 00:00:00 +0000\n" + header + b"\nbody\n"
        replies = self.smtp.deliver("<a@example.org>", ["<b@example.com>"], message)
        final = replies[-1]
        self.assertFalse(400 <= final.code < 500, (final, message))
        if final.code == 250:
            stored = max((self.base / "new").iterdir(), key=lambda path: path.stat().st_mtime_ns).read_bytes()
            header_block, body = split_header(message)
            self.assertTrue(stored.endswith(header_block + b"\n" + body), (stored, message))
            for path in (self.base / "new").iterdir():
                path.unlink()
