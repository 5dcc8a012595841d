"""rcpt_verify against the suite's real Postfix (SMTP) and Dovecot (LMTP)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import DECLINED, DENY, DENYSOFT, OK, Address, ConfigError, Engine
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook

from .queue_support import free_port, shared_dovecot, shared_postfix


class RecipientVerifyTests(unittest.TestCase):
    def engine(self, line: str, clock: Any = None) -> Engine:
        engine = make_engine([line], clock=clock if clock is not None else reactor)
        self.addCleanup(engine.close)
        return engine

    def ask(self, engine: Engine, rcpt: str, **connection: Any) -> defer.Deferred[Any]:
        txn = make_transaction(engine, connection=make_connection(**connection), sender="<a@example.org>")
        return run_hook(engine, "rcpt", txn, Address.parse(rcpt))

    @defer.inlineCallbacks
    def test_postfix_knows_its_users(self) -> Any:
        postfix = shared_postfix()
        engine = self.engine(f"rcpt_verify 127.0.0.1:{postfix.port}")
        self.assertEqual((yield self.ask(engine, "<bob@example.test>")).code, DECLINED)
        result = yield self.ask(engine, "<nobody@example.test>")
        self.assertEqual((result.code, result.message),
                         (DENY, "Sorry, no mailbox here by that name (#5.1.1)"))
        self.assertEqual(postfix.delivered("bob"), [])  # a probe never sends a message

    @defer.inlineCallbacks
    def test_dovecot_lmtp_and_accept(self) -> Any:
        dovecot = shared_dovecot()
        engine = self.engine(f"rcpt_verify 127.0.0.1:{dovecot.port} lmtp accept 1")
        self.assertEqual((yield self.ask(engine, "<carol@example.test>")).code, OK)
        self.assertEqual((yield self.ask(engine, "<nobody@example.test>")).code, DENY)

    @defer.inlineCallbacks
    def test_answers_are_cached_for_their_ttl(self) -> Any:
        postfix = shared_postfix()
        clock = Clock()
        clock.advance(1000)
        engine = self.engine(f"rcpt_verify 127.0.0.1:{postfix.port} positive_ttl 1h negative_ttl 10m reuse 0",
                             clock)
        plugin: Any = engine.plugin("rcpt_verify")
        self.assertEqual((yield self.ask(engine, "<bob@example.test>")).code, DECLINED)
        self.assertEqual((yield self.ask(engine, "<Nobody@example.test>")).code, DENY)
        plugin.port = free_port()  # the downstream is gone: only the cache can answer now
        self.assertEqual((yield self.ask(engine, "<bob@example.test>")).code, DECLINED)
        self.assertEqual((yield self.ask(engine, "<nobody@example.test>")).code, DENY)
        clock.advance(601)
        self.assertEqual((yield self.ask(engine, "<bob@example.test>")).code, DECLINED)
        self.assertEqual((yield self.ask(engine, "<nobody@example.test>")).code, DENYSOFT)
        clock.advance(3000)
        self.assertEqual((yield self.ask(engine, "<bob@example.test>")).code, DENYSOFT)

    @defer.inlineCallbacks
    def test_one_probe_for_simultaneous_questions(self) -> Any:
        postfix = shared_postfix()
        engine = self.engine(f"rcpt_verify 127.0.0.1:{postfix.port}")
        plugin: Any = engine.plugin("rcpt_verify")
        probes: list[str] = []
        original = plugin.probe

        def counting(address: str) -> Any:
            probes.append(address)
            return original(address)

        self.patch(plugin, "probe", counting)
        results = yield defer.gatherResults([self.ask(engine, "<carol@example.test>") for _ in range(3)])
        self.assertEqual([r.code for r in results], [DECLINED] * 3)
        self.assertEqual(probes, ["carol@example.test"])

    @defer.inlineCallbacks
    def test_cache_size_drops_the_oldest(self) -> Any:
        postfix = shared_postfix()
        engine = self.engine(f"rcpt_verify 127.0.0.1:{postfix.port} cache_size 2")
        plugin: Any = engine.plugin("rcpt_verify")
        for user in ("bob", "carol", "nobody"):
            yield self.ask(engine, f"<{user}@example.test>")
        self.assertEqual(list(plugin.cache), ["carol@example.test", "nobody@example.test"])

    @defer.inlineCallbacks
    def test_unreachable_downstream(self) -> Any:
        port = free_port()
        engine = self.engine(f"rcpt_verify 127.0.0.1:{port}")
        result = yield self.ask(engine, "<bob@example.test>")
        self.assertEqual((result.code, result.message),
                         (DENYSOFT, "Cannot verify the recipient now, try again later (#4.4.1)"))
        engine = self.engine(f"rcpt_verify 127.0.0.1:{port} unavailable accept")
        self.assertEqual((yield self.ask(engine, "<bob@example.test>")).code, DECLINED)

    @defer.inlineCallbacks
    def test_who_and_what_is_checked(self) -> Any:
        engine = self.engine(f"rcpt_verify 127.0.0.1:{free_port()} domains example.test")
        self.assertEqual((yield self.ask(engine, "<x@elsewhere.test>")).code, DECLINED)
        self.assertEqual((yield self.ask(engine, "<x@example.test>", relay_client=True)).code, DECLINED)
        self.assertEqual((yield self.ask(engine, "<x@example.test>", auth_user="u")).code, DECLINED)
        self.assertEqual((yield self.ask(engine, "<x@example.test>")).code, DENYSOFT)

    def test_arguments(self) -> None:
        with self.assertRaises(ConfigError):
            make_engine(["rcpt_verify"])
        with self.assertRaises(ConfigError):
            make_engine(["rcpt_verify 127.0.0.1 unavailable maybe"])
        engine = make_engine(["rcpt_verify /run/dovecot/lmtp lmtp"])
        self.assertEqual(engine.plugin("rcpt_verify").port, None)  # type: ignore[attr-defined]
