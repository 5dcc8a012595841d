"""auth/flat_file: clear, bcrypt and argon2 secrets, CRAM-MD5 only with clear secrets."""

from __future__ import annotations

from typing import Any

import bcrypt
from argon2 import PasswordHasher
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from qptwisted import DENY, OK, ConfigError
from qptwisted.lib.sasl import cram_md5_digest
from qptwisted.testing import make_engine, make_transaction, run_hook

HASHED = bcrypt.hashpw(b"hashed-pw", bcrypt.gensalt(rounds=4)).decode()
ARGON2 = PasswordHasher(time_cost=1, memory_cost=1024).hash("argon-pw")
ENTRIES = ["clear@example.com:clear-pw", f"hashed@example.com:{HASHED}", f"argon@example.com:{ARGON2}"]
TICKET = "<123.456@mx.test>"


class FlatFileTests(unittest.TestCase):
    def engine(self, entries: list[str] = ENTRIES) -> Any:
        return make_engine(["auth/flat_file"], config={"flat_auth_pw": entries}, clock=reactor)

    @inlineCallbacks
    def check(self, mechanism: str, user: str, password: str | None = None,
              digest: str | None = None, entries: list[str] = ENTRIES) -> Any:
        engine = self.engine(entries)
        hook = "auth_cram_md5" if mechanism == "cram-md5" else f"auth_{mechanism}"
        result = yield run_hook(engine, hook, make_transaction(engine), mechanism, user, password, digest,
                                TICKET if digest else None)
        return result

    @inlineCallbacks
    def test_clear_secret(self) -> Any:
        self.assertEqual((yield self.check("plain", "clear@example.com", "clear-pw")).code, OK)
        self.assertEqual((yield self.check("login", "CLEAR@example.com", "clear-pw")).code, OK)
        wrong = yield self.check("plain", "clear@example.com", "nope")
        self.assertEqual((wrong.code, wrong.message), (DENY, "wrong password"))

    @inlineCallbacks
    def test_bcrypt_secret(self) -> Any:
        self.assertEqual((yield self.check("plain", "hashed@example.com", "hashed-pw")).code, OK)
        self.assertEqual((yield self.check("login", "hashed@example.com", "nope")).code, DENY)

    @inlineCallbacks
    def test_argon2_secret(self) -> Any:
        self.assertTrue(ARGON2.startswith("$argon2id$"))
        self.assertEqual((yield self.check("plain", "argon@example.com", "argon-pw")).code, OK)
        self.assertEqual((yield self.check("login", "argon@example.com", "nope")).code, DENY)

    @inlineCallbacks
    def test_unknown_user(self) -> Any:
        self.assertEqual((yield self.check("plain", "who@example.com", "x")).code, DENY)

    @inlineCallbacks
    def test_cram_md5_needs_clear_secret(self) -> Any:
        good = cram_md5_digest("clear-pw", TICKET)
        self.assertEqual((yield self.check("cram-md5", "clear@example.com", digest=good)).code, OK)
        bad = cram_md5_digest("nope", TICKET)
        self.assertEqual((yield self.check("cram-md5", "clear@example.com", digest=bad)).code, DENY)
        digest = cram_md5_digest("hashed-pw", TICKET)
        hashed = yield self.check("cram-md5", "hashed@example.com", digest=digest)
        self.assertEqual(hashed.code, DENY)

    def test_cram_md5_not_offered_when_all_hashed(self) -> None:
        engine = self.engine([f"hashed@example.com:{HASHED}"])
        self.assertTrue(engine.hooks.has("auth_plain"))
        self.assertFalse(engine.hooks.has("auth_cram_md5"))

    def test_malformed_entry(self) -> None:
        with self.assertRaises(ConfigError):
            self.engine(["no-secret-here"])
