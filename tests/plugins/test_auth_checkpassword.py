"""auth/checkpassword: a real checkpassword program run as a child process."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK, ConfigError
from qptwisted.testing import make_engine, make_transaction, run_hook

PROGRAM = """\
import os, sys
data = b""
while True:
    chunk = os.read(3, 1024)
    if not chunk:
        break
    data += chunk
user, password, stamp = data.split(b"\\0")[:3]
if not stamp.isdigit():
    sys.exit(2)
if user == b"tempfail@example.com":
    sys.exit(111)
if user == b"good@example.com" and password == b"pass word":
    os.execv(sys.argv[1], sys.argv[1:])
sys.exit(1)
"""


class CheckPasswordTests(unittest.TestCase):
    def setUp(self) -> None:
        true = shutil.which("true")
        if true is None:
            raise unittest.SkipTest("no 'true' program")
        self.true = true
        directory = Path(tempfile.mkdtemp(prefix="qptwisted-checkpw-"))
        self.addCleanup(shutil.rmtree, directory, True)
        self.program = directory / "checkpassword"
        self.program.write_text(f"#!{sys.executable}\n{PROGRAM}")
        self.program.chmod(stat.S_IRWXU)

    @inlineCallbacks
    def check(self, user: str, password: str, program: str | None = None) -> Any:
        engine = make_engine([f"auth/checkpassword checkpw {program or self.program} true {self.true}"],
                             clock=reactor)
        result = yield run_hook(engine, "auth_plain", make_transaction(engine), "plain", user, password,
                                None, None)
        return result.code

    @inlineCallbacks
    def test_good_password(self) -> Any:
        self.assertEqual((yield self.check("good@example.com", "pass word")), OK)

    @inlineCallbacks
    def test_wrong_password(self) -> Any:
        self.assertEqual((yield self.check("good@example.com", "nope")), DENY)

    @inlineCallbacks
    def test_temporary_failure(self) -> Any:
        self.assertEqual((yield self.check("tempfail@example.com", "x")), DENYSOFT)

    @inlineCallbacks
    def test_missing_program(self) -> Any:
        missing = os.path.join(os.path.dirname(self.program), "missing")
        self.assertEqual((yield self.check("good@example.com", "pass word", missing)), DENYSOFT)

    def test_config_file_and_bad_arguments(self) -> None:
        engine = make_engine(["auth/checkpassword"],
                             config={"smtpauth-checkpassword": f"{self.program} {self.true}"})
        self.assertTrue(engine.hooks.has("auth_login"))
        self.assertFalse(engine.hooks.has("auth_cram_md5"))
        with self.assertRaises(ConfigError):
            make_engine(["auth/checkpassword true x"])
