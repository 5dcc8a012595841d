"""relay: relayclients, morerelayclients, norelayclients, ``only``, RELAYCLIENT."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from twisted.trial import unittest

from qptwisted import DECLINED, DENY, OK, Address, ConfigError
from qptwisted.testing import SMTPDialogue, make_connection, make_engine, make_transaction, run_hook

RELAYCLIENTS = ["# trusted", "192.0.2.7", "198.51.100.0/24", "2001:db8:1::/48", "10.1.", "172"]


class RelayTests(unittest.TestCase):
    def setUp(self) -> None:
        saved = os.environ.pop("RELAYCLIENT", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "RELAYCLIENT", saved)

    def relayed(self, ip: str, config: Mapping[str, Sequence[str]] | None = None,
                plugin: str = "relay") -> bool:
        engine = make_engine([plugin], config=config or {"relayclients": RELAYCLIENTS})
        connection = make_connection(ip)
        result = self.successResultOf(run_hook(engine, "connect", make_transaction(engine, connection)))
        self.assertEqual(result.code, DECLINED)  # relay never decides the connection itself
        return connection.relay_client

    def test_exact_address(self) -> None:
        self.assertTrue(self.relayed("192.0.2.7"))
        self.assertFalse(self.relayed("192.0.2.8"))

    def test_cidr_v4(self) -> None:
        self.assertTrue(self.relayed("198.51.100.0"))
        self.assertTrue(self.relayed("198.51.100.255"))
        self.assertFalse(self.relayed("198.51.101.1"))

    def test_cidr_v6(self) -> None:
        self.assertTrue(self.relayed("2001:db8:1:ffff::25"))
        self.assertTrue(self.relayed("2001:DB8:1::1"))
        self.assertFalse(self.relayed("2001:db8:2::1"))

    def test_octet_prefix(self) -> None:
        self.assertTrue(self.relayed("10.1.200.3"))
        self.assertFalse(self.relayed("10.10.0.1"))  # "10.1." is not a string prefix match
        self.assertTrue(self.relayed("172.31.0.1"))
        self.assertFalse(self.relayed("173.0.0.1"))

    def test_ipv4_mapped_ipv6(self) -> None:
        self.assertTrue(self.relayed("::ffff:192.0.2.7"))
        self.assertTrue(self.relayed("::ffff:198.51.100.9"))
        self.assertFalse(self.relayed("::ffff:192.0.2.8"))

    def test_nothing_configured(self) -> None:
        self.assertFalse(self.relayed("127.0.0.1", config={"relayclients": []}))

    def test_morerelayclients(self) -> None:
        config = {"relayclients": ["192.0.2.7"], "morerelayclients": ["203.0.113.0/28"]}
        self.assertTrue(self.relayed("203.0.113.5", config))
        self.assertTrue(self.relayed("192.0.2.7", config))
        self.assertFalse(self.relayed("203.0.113.16", config))

    def test_norelayclients_overrides(self) -> None:
        config = {"relayclients": ["198.51.100.0/24"], "morerelayclients": ["192.0.2.0/24"],
                  "norelayclients": ["198.51.100.66", "192.0.2.128/25"]}
        self.assertTrue(self.relayed("198.51.100.65", config))
        self.assertFalse(self.relayed("198.51.100.66", config))
        self.assertFalse(self.relayed("192.0.2.200", config))
        self.assertTrue(self.relayed("192.0.2.1", config))

    def test_relayclient_environment(self) -> None:
        os.environ["RELAYCLIENT"] = ""
        self.addCleanup(os.environ.pop, "RELAYCLIENT", None)
        self.assertTrue(self.relayed("203.0.113.99", {"relayclients": []}))
        # norelayclients still wins
        self.assertFalse(self.relayed("203.0.113.99", {"norelayclients": ["203.0.113.99"]}))

    def test_bad_entry_fails_at_load(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            make_engine(["relay"], config={"relayclients": ["not-an-ip"]})
        self.assertIn("not-an-ip", str(raised.exception))

    def test_unknown_argument_fails_at_load(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            make_engine(["relay sometimes"])
        self.assertIn("sometimes", str(raised.exception))


class RelayOnlyTests(unittest.TestCase):
    def rcpt(self, plugin: str, relay_client: bool) -> object:
        engine = make_engine([plugin])
        transaction = make_transaction(engine, make_connection(relay_client=relay_client), "<a@example.org>")
        return self.successResultOf(run_hook(engine, "rcpt", transaction,
                                             Address.parse("<x@elsewhere.example>"))).code

    def test_only_mode(self) -> None:
        self.assertEqual(self.rcpt("relay only", relay_client=True), OK)
        self.assertEqual(self.rcpt("relay only", relay_client=False), DENY)

    def test_without_only_rcpt_is_left_to_others(self) -> None:
        self.assertEqual(self.rcpt("relay", relay_client=True), DECLINED)
        self.assertEqual(self.rcpt("relay", relay_client=False), DECLINED)

    def test_relay_and_rcpt_ok_in_a_dialogue(self) -> None:
        engine = make_engine(["relay", "rcpt_ok", "queue/discard"],
                             config={"relayclients": ["192.0.2.0/24"], "rcpthosts": ["example.com"]})
        trusted = SMTPDialogue(engine, remote_ip="192.0.2.10")
        trusted.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(trusted.send("RCPT TO:<x@elsewhere.example>")[0][0], 250)
        trusted.close()
        stranger = SMTPDialogue(engine, remote_ip="203.0.113.10")
        stranger.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(stranger.send("RCPT TO:<x@elsewhere.example>")[0][0], 550)
        self.assertEqual(stranger.send("RCPT TO:<x@example.com>")[0][0], 250)
        stranger.close()
