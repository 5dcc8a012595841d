"""The sample inbound anti-spam chain of docs/policy-plugins.md, booted from a config directory.

A clean message is delivered; a forged HELO, a listed sender and an early
talker are refused. Also the unit tests of the shared policy helpers
(:mod:`qptwisted.lib.policy`).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import (
    DECLINED,
    DENY,
    DENY_DISCONNECT,
    DENYSOFT,
    DENYSOFT_DISCONNECT,
    LOGINFO,
    ArgumentError,
    arg,
)
from qptwisted.core.engine import Engine
from qptwisted.lib.policy import PolicyPlugin, reject_argument, return_code
from qptwisted.testing import make_connection, make_engine, make_transaction, write_config
from tests.core_support import CaptureQueue, Dialogue
from tests.plugins.policy_support import FakeResolver

#: config/plugins of the sample chain (docs/policy-plugins.md), minus the queue line
CHAIN = """
hosts_allow max_conn_ip 5
loadcheck max_load 50
relay
whitelist
earlytalker wait 1
count_unrecognized_commands 4
noop_counter max 3
helo policy rfc
naughty reject rcpt
dont_require_anglebrackets
badmailfrom reject naughty
badmailfromto
badrcptto
rcpt_ok
bogus_bounce deny
headers require From,Date future 2 past 30
loop 100
block_subject all
tarpit delay 5
"""

CONFIG = {
    "me": "mx.example.com",
    "rcpthosts": ["example.com"],
    "relayclients": ["127.0.0.1"],
    "badmailfrom": ["@spam.test Your domain sends spam", "casino@example.net"],
    "badrcptto": ["noreply@example.com"],
    "badhelo": ["example.com"],
    "plugins": [line for line in CHAIN.strip().splitlines()],
}

CLEAN = (
    "From: Alice <alice@example.org>\n"
    "To: Bob <bob@example.com>\n"
    "Date: Sun, 09 Sep 2001 01:46:40 +0000\n"
    "Message-Id: <1@example.org>\n"
    "Subject: lunch\n"
    "\n"
    "Noon?\n"
)


def boot(directory: str) -> tuple[Engine, CaptureQueue]:
    """Boot the chain the way the server does: from a config directory (trial removes it)."""
    write_config(directory, {**CONFIG, "spool_dir": f"{directory}/spool"})
    clock = Clock()
    clock.advance(1_000_000_000)
    engine = Engine.from_config(directory, clock)
    engine.resolver = FakeResolver(
        {"mail.example.org": ["198.51.100.20"], "mail.spam.test": ["203.0.113.9"]},
        {"198.51.100.20": ["mail.example.org"]})
    queue = CaptureQueue(engine)
    engine.add_plugin(queue)
    return engine, queue


def connect(engine: Engine, remote_ip: str = "198.51.100.20", talk: str | None = None) -> Dialogue:
    """Connect; an early talker sends ``talk`` before the greeting. Waits out earlytalker."""
    smtp = Dialogue(engine, remote_ip=remote_ip)
    if talk is not None:
        smtp.send(talk)
    engine.clock.advance(1)  # type: ignore[attr-defined]
    smtp.greeting = smtp.replies()
    return smtp


class ChainTests(unittest.TestCase):
    def setUp(self) -> None:
        self.engine, self.queue = boot(self.mktemp())
        self.addCleanup(self.engine.clock.advance, 0)  # type: ignore[attr-defined]

    def test_clean_message_is_delivered(self) -> None:
        smtp = connect(self.engine)
        self.assertEqual([reply[0] for reply in smtp.greeting], [220])
        replies = smtp.deliver("<alice@example.org>", ["<bob@example.com>"], CLEAN, helo="mail.example.org")
        self.assertEqual([reply[0] for reply in replies], [250, 250, 250, 354, 250])
        self.assertEqual(len(self.queue.messages), 1)
        self.assertIn(b"X-HELO: mail.example.org\n", self.queue.messages[0])

    def test_forged_helo_is_refused(self) -> None:
        smtp = connect(self.engine)
        self.assertEqual(
            smtp.send("EHLO example.com"), [(550, "5.7.1", "I do not believe you are example.com.")]
        )
        # karma is now negative: the tarpit slows every further reply down
        self.assertEqual(smtp.send("EHLO [192.0.2.99]"), [])
        self.engine.clock.advance(5)  # type: ignore[attr-defined]
        self.assertEqual(smtp.replies(), [(550, "5.7.1", "Forged IPs not accepted here")])
        smtp.send("EHLO 198.51.100.20")
        self.engine.clock.advance(5)  # type: ignore[attr-defined]
        self.assertEqual(smtp.replies()[0][2], "Plain IP is invalid HELO hostname (RFC 2821)")
        self.assertEqual(self.queue.messages, [])

    def test_bad_sender_is_refused_at_rcpt_after_a_tarpit(self) -> None:
        smtp = connect(self.engine)
        smtp.send("EHLO mail.spam.test")
        self.assertEqual([reply[0] for reply in smtp.send("MAIL FROM:<boss@spam.test>")], [250])
        self.assertEqual(smtp.send("RCPT TO:<bob@example.com>"), [])  # naughty clients wait
        self.engine.clock.advance(5)  # type: ignore[attr-defined]
        self.assertEqual(smtp.replies(), [(550, "5.7.1", "Your domain sends spam")])
        self.assertTrue(smtp.closed)
        self.assertEqual(self.queue.messages, [])

    def test_early_talker_is_refused(self) -> None:
        smtp = connect(self.engine, talk="EHLO i-cannot-wait.test")
        self.assertEqual(
            smtp.greeting, [(550, "5.7.1", "Connecting host started transmitting before SMTP greeting")]
        )
        self.assertTrue(smtp.closed)

    def test_relay_client_skips_the_checks(self) -> None:
        smtp = Dialogue(self.engine, remote_ip="127.0.0.1")
        self.assertEqual([reply[0] for reply in smtp.greeting], [220])  # no earlytalker delay
        replies = smtp.deliver("<boss@spam.test>", ["<friend@elsewhere.test>"], CLEAN, helo="example.com")
        self.assertEqual(replies[-1][0], 250)

    def test_bogus_bounce_and_bad_recipient(self) -> None:
        smtp = connect(self.engine)
        replies = smtp.deliver(
            "<>", ["<bob@example.com>", "<carol@example.com>"], CLEAN, helo="mail.example.org"
        )
        self.assertEqual(replies[-1], (552, "5.7.1", "Invalid bounce (rcpt)"))
        smtp.send("MAIL FROM:<alice@example.org>")
        self.assertEqual(smtp.send("RCPT TO:<noreply@example.com>")[0][0], 550)


class Sample(PolicyPlugin):
    name = "test_policy_sample"
    extra = arg.str(None, "a plugin's own argument beside the common ones")


class Lenient(Sample):
    name = "test_policy_lenient"
    reject = reject_argument("0", extra=("connect",))


class PolicyHelperTests(unittest.TestCase):
    def sample(self, *args: str) -> Sample:
        engine = make_engine()
        plugin = Sample(engine, args)
        engine.add_plugin(plugin)
        return plugin

    def test_common_arguments(self) -> None:
        plugin = self.sample("Reject", "0", "extra", "x")
        self.assertEqual((plugin.reject, plugin.extra, plugin.reject_type, plugin.loglevel),
                         ("0", "x", None, None))
        self.assertEqual(self.sample().reject, "1")
        for word, value in (("yes", "1"), ("off", "0"), ("NAUGHTY", "naughty"), ("true", "1")):
            self.assertEqual(self.sample("reject", word).reject, value, word)
        self.assertEqual(self.sample("reject_type", "Hard").reject_type, "hard")
        self.assertEqual(self.sample("loglevel", "LOGINFO").loglevel, "6")
        for bad in (("reject",), ("bogus", "1"), ("reject_type", "maybe"), ("loglevel", "9"),
                    ("reject", "connect"), ("reject", "maybe")):
            self.assertRaises(ArgumentError, self.sample, *bad)

    def test_redeclared_default_and_extra_words(self) -> None:
        engine = make_engine()
        lenient = engine.add_plugin(Lenient(engine, ("reject", "connect")))
        self.assertEqual(lenient.reject, "connect")  # type: ignore[attr-defined]
        self.assertEqual(engine.add_plugin(Lenient(engine, ())).reject, "0")  # type: ignore[attr-defined]

    def test_get_reject_type(self) -> None:
        table = {
            "temp": DENYSOFT,
            "soft": DENYSOFT,
            "perm": DENY,
            "hard": DENY,
            "disconnect": DENY_DISCONNECT,
            "temp_disconnect": DENYSOFT_DISCONNECT,
        }
        for word, code in table.items():
            self.assertEqual(self.sample("reject_type", word).get_reject_type(), code, word)
        self.assertEqual(self.sample().get_reject_type(), DENY)
        self.assertEqual(self.sample().get_reject_type(DENYSOFT), DENYSOFT)
        self.assertEqual(
            self.sample("reject_type", "temp").get_reject_type(DENY, "disconnect"), DENY_DISCONNECT
        )

    def test_get_reject(self) -> None:
        txn = make_transaction(make_engine())
        self.assertEqual(self.sample().get_reject(txn, "no"), (DENY, "no"))
        self.assertEqual(self.sample("reject_type", "temp").get_reject(txn, "no"), (DENYSOFT, "no"))
        self.assertEqual(self.sample("reject", "0").get_reject(txn, "no"), DECLINED)
        naughty = self.sample("reject", "naughty", "reject_type", "temp")
        self.assertEqual(naughty.get_reject(txn, "first"), DECLINED)
        naughty.get_reject(txn, "second")
        self.assertEqual(txn.connection.notes["naughty"], "first\nsecond")
        self.assertEqual(txn.connection.notes["naughty_reject_type"], "temp")

    def test_is_immune_and_naughty(self) -> None:
        plugin = self.sample()
        engine = make_engine()
        self.assertFalse(plugin.is_immune(make_transaction(engine)))
        self.assertTrue(plugin.is_immune(make_transaction(engine, make_connection(relay_client=True))))
        for scope, key in (
            ("connection", "whitelisthost"),
            ("transaction", "whitelistsender"),
            ("connection", "naughty"),
            ("connection", "rejected"),
        ):
            txn = make_transaction(engine)
            (txn.connection.notes if scope == "connection" else txn.notes)[key] = True
            self.assertTrue(plugin.is_immune(txn), key)
        txn = make_transaction(engine)
        self.assertFalse(plugin.is_naughty(txn))
        self.assertTrue(plugin.is_naughty(txn, "you are"))
        self.assertEqual(plugin.adjust_karma(txn, -2), -2)
        plugin.adjust_karma(txn.connection, 1)
        self.assertEqual(txn.connection.notes["karma"], -1)

    def test_loglevel_adjustment(self) -> None:
        self.assertEqual(self.sample().adjust_log_level(LOGINFO), LOGINFO)
        self.assertEqual(self.sample("loglevel", "2").adjust_log_level(LOGINFO), 2)
        self.assertEqual(self.sample("loglevel", "-2").adjust_log_level(LOGINFO), 4)
        self.assertEqual(self.sample("loglevel", "+3").adjust_log_level(LOGINFO), 7)

    def test_return_code(self) -> None:
        self.assertEqual(return_code("denysoft"), DENYSOFT)
        self.assertEqual(return_code("901"), DENY)
        self.assertIsNone(return_code("MAYBE"))
