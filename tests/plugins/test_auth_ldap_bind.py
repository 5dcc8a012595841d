"""auth/ldap_bind against a real OpenLDAP slapd started on loopback with a private database."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK, ConfigError
from qptwisted.testing import SMTPDialogue, make_engine, make_transaction, run_hook

from .ldap_support import BASE, READER, READER_PASSWORD, Slapd, shared_slapd
from .queue_support import free_port

PEOPLE = f"ou=people,{BASE}"


class LDAPBindTests(unittest.TestCase):
    def setUp(self) -> None:
        self.slapd = shared_slapd()

    @inlineCallbacks
    def check(self, line: str, user: str, password: str, config: dict[str, Any] | None = None,
              hook: str = "auth_plain") -> Any:
        engine = make_engine([line], config=config, clock=reactor)
        self.addCleanup(engine.close)
        result = yield run_hook(engine, hook, make_transaction(engine), hook[5:], user, password, None, None)
        return result

    def line(self, extra: str = "") -> str:
        return f"auth/ldap_bind ldap_host 127.0.0.1 ldap_port {self.slapd.port} ldap_base {PEOPLE} {extra}"

    @inlineCallbacks
    def test_right_password_binds(self) -> Any:
        self.assertEqual((yield self.check(self.line(), "alice", "wonderland")).code, OK)
        self.assertEqual((yield self.check(self.line(), "alice@example.test", "wonderland",
                                           hook="auth_login")).code, OK)

    @inlineCallbacks
    def test_wrong_password_and_unknown_user_are_535(self) -> Any:
        result = yield self.check(self.line(), "alice", "wrong")
        self.assertEqual((result.code, result.message), (DENY, "wrong user or password"))
        self.assertEqual((yield self.check(self.line(), "mallory", "wonderland")).code, DENY)

    @inlineCallbacks
    def test_empty_password_is_never_an_anonymous_bind(self) -> Any:
        self.assertEqual((yield self.check(self.line(), "alice", "")).code, DENY)

    @inlineCallbacks
    def test_filter_injection_is_escaped(self) -> Any:
        # unescaped, "*" matches every uid, and "alice)(uid=*" would widen the filter
        self.assertEqual((yield self.check(self.line(), "*", "wonderland")).code, DENY)
        self.assertEqual((yield self.check(self.line(), "alice)(uid=*", "wonderland")).code, DENY)
        self.assertEqual((yield self.check(self.line(), "al*", "wonderland")).code, DENY)
        # a user whose name really has a star still logs in
        self.assertEqual((yield self.check(self.line(), "eve*", "star")).code, OK)

    @inlineCallbacks
    def test_whole_address_against_mail(self) -> Any:
        line = self.line("ldap_auth_filter_attr mail ldap_user address")
        self.assertEqual((yield self.check(line, "bob@example.test", "builder")).code, OK)
        self.assertEqual((yield self.check(line, "bob", "builder")).code, DENY)

    @inlineCallbacks
    def test_search_account(self) -> Any:
        line = self.line(f"ldap_bind_dn {READER} ldap_bind_password {READER_PASSWORD}")
        self.assertEqual((yield self.check(line, "alice", "wonderland")).code, OK)
        line = self.line(f"ldap_bind_dn {READER} ldap_bind_password nope")
        self.assertEqual((yield self.check(line, "alice", "wonderland")).code, DENYSOFT)

    @inlineCallbacks
    def test_settings_from_config_file(self) -> Any:
        config = {"ldap": ["ldap_host 127.0.0.1", f"ldap_port {self.slapd.port}", f"ldap_base {PEOPLE}"]}
        self.assertEqual((yield self.check("auth/ldap_bind", "alice", "wonderland", config)).code, OK)

    @inlineCallbacks
    def test_starttls_and_ldaps_with_checked_certificate(self) -> Any:
        cafile = self.slapd.cert
        line = self.line(f"ldap_tls starttls ldap_cafile {cafile}")
        self.assertEqual((yield self.check(line, "alice", "wonderland")).code, OK)
        line = (f"auth/ldap_bind ldap_host 127.0.0.1 ldap_port {self.slapd.ldaps_port} ldap_base {PEOPLE} "
                f"ldap_tls ldaps ldap_cafile {cafile}")
        self.assertEqual((yield self.check(line, "alice", "wonderland")).code, OK)
        self.assertEqual((yield self.check(line, "alice", "wrong")).code, DENY)

    @inlineCallbacks
    def test_untrusted_certificate_is_temporary_failure(self) -> Any:
        line = (f"auth/ldap_bind ldap_host 127.0.0.1 ldap_port {self.slapd.ldaps_port} ldap_base {PEOPLE} "
                "ldap_tls ldaps")
        self.assertEqual((yield self.check(line, "alice", "wonderland")).code, DENYSOFT)

    def test_smtp_dialogue_answers_235_535(self) -> None:
        # the kit's engine runs thread-pool work inline, so the dialogue answers at once
        import base64

        smtp = SMTPDialogue(make_engine([self.line()], config={"tls_before_auth": "0"}))
        smtp.send("EHLO client.test")

        def plain(user: str, password: str) -> str:
            return base64.b64encode(f"\0{user}\0{password}".encode()).decode()

        self.assertEqual(smtp.send(f"AUTH PLAIN {plain('alice', 'wrong')}")[-1].code, 535)
        self.assertEqual(smtp.send(f"AUTH PLAIN {plain('alice', 'wonderland')}")[-1].code, 235)


class LDAPDownTests(unittest.TestCase):
    @inlineCallbacks
    def test_server_down_is_454(self) -> Any:
        engine = make_engine([f"auth/ldap_bind ldap_host 127.0.0.1 ldap_port {free_port()} ldap_base "
                              f"{PEOPLE}"], clock=reactor)
        self.addCleanup(engine.close)
        result = yield run_hook(engine, "auth_plain", make_transaction(engine), "plain", "alice",
                                "wonderland", None, None)
        self.assertEqual((result.code, result.message), (DENYSOFT, "authentication service unavailable"))

    @inlineCallbacks
    def test_server_stopped_while_running(self) -> Any:
        slapd = Slapd(self.addCleanup, {"carol": "secret"})
        line = f"auth/ldap_bind ldap_host 127.0.0.1 ldap_port {slapd.port} ldap_base {PEOPLE}"
        engine = make_engine([line], clock=reactor)
        self.addCleanup(engine.close)
        txn = make_transaction(engine)
        self.assertEqual((yield run_hook(engine, "auth_plain", txn, "plain", "carol", "secret", None,
                                         None)).code, OK)
        slapd.stop()
        self.assertEqual((yield run_hook(engine, "auth_plain", txn, "plain", "carol", "secret", None,
                                         None)).code, DENYSOFT)

    def test_host_and_base_are_required(self) -> None:
        with self.assertRaises(ConfigError):
            make_engine(["auth/ldap_bind ldap_host 127.0.0.1"])
        with self.assertRaises(ConfigError):
            make_engine(["auth/ldap_bind ldap_host h ldap_base b ldap_tls maybe"])
        with self.assertRaises(ConfigError):
            make_engine(["auth/ldap_bind"], config={"ldap": ["ldap_host h", "ldap_base b", "ldap_hots x"]})
