"""auth/cred: the bridge to a twisted.cred portal an embedding application registers."""

from __future__ import annotations

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.trial import unittest

from qptwisted import DENY, OK, ConfigError
from qptwisted.lib.sasl import cram_md5_digest, register_portal, simple_portal, unregister_portal
from qptwisted.testing import SMTPDialogue, make_engine, make_transaction, run_hook


class CredTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{"alice@example.com": b"wonderland"})
        register_portal(simple_portal(checker), "test-portal")
        self.addCleanup(unregister_portal, "test-portal")
        self.engine = make_engine(["auth/cred test-portal"])

    def check(self, hook: str, *args: object) -> object:
        result = self.successResultOf(run_hook(self.engine, hook, make_transaction(self.engine), *args))
        return result.code

    def test_plain_and_login(self) -> None:
        self.assertEqual(self.check("auth_plain", "plain", "alice@example.com", "wonderland", None, None), OK)
        self.assertEqual(self.check("auth_login", "login", "alice@example.com", "nope", None, None), DENY)
        self.assertEqual(self.check("auth_plain", "plain", "bob@example.com", "x", None, None), DENY)

    def test_cram_md5(self) -> None:
        ticket = "<1.2@mx.test>"
        digest = cram_md5_digest("wonderland", ticket)
        user = "alice@example.com"
        self.assertEqual(self.check("auth_cram_md5", "cram-md5", user, None, digest, ticket), OK)
        self.assertEqual(self.check("auth_cram_md5", "cram-md5", user, None, "0" * 32, ticket), DENY)

    def test_dialogue(self) -> None:
        engine = make_engine(["auth/cred test-portal"], config={"tls_before_auth": "0"})
        smtp = SMTPDialogue(engine)
        self.addCleanup(smtp.close)
        self.assertIn("AUTH PLAIN LOGIN CRAM-MD5", smtp.send("EHLO client.test")[0].text)
        self.assertEqual(smtp.send("AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHdvbmRlcmxhbmQ=")[0][0], 235)

    def test_portal_handed_over_as_a_resource(self) -> None:
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{"bob@example.com": b"builder"})
        engine = make_engine(["auth/cred"], resources={"portal": simple_portal(checker)})
        result = self.successResultOf(run_hook(engine, "auth_plain", make_transaction(engine), "plain",
                                               "bob@example.com", "builder", None, None))
        self.assertEqual(result.code, OK)

    def test_unknown_portal(self) -> None:
        with self.assertRaises(ConfigError):
            make_engine(["auth/cred nowhere"])
