"""hosts_allow: per-IP connection limit and ip/mask rules (IPv4 and IPv6)."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from qptwisted import DECLINED, DENYSOFT
from qptwisted.service.server import SMTPFactory
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.core_support import Dialogue
from tests.plugins.policy_support import codes, engine

RULES = ["192.0.2.0/24 DENY Go away", "198.51.100.7 OK", "2001:db8::/32 DENYSOFT Later please",
         "203.0.113.0/24 NONSENSE ignored code means DECLINED", "bad-entry DENY x"]


class HostsAllowTests(unittest.TestCase):
    def test_rules(self) -> None:
        eng = engine(["hosts_allow"], {"hosts_allow": RULES})
        smtp = Dialogue(eng, remote_ip="192.0.2.9")
        self.assertEqual(smtp.greeting, [(550, "5.7.1", "Go away")])
        self.assertTrue(smtp.closed)
        smtp = Dialogue(eng, remote_ip="2001:db8::1")
        self.assertEqual(smtp.greeting, [(451, "4.7.1", "Later please")])
        for ip in ("198.51.100.7", "203.0.113.5", "2001:db9::1", "198.51.100.8"):
            self.assertEqual(codes(Dialogue(eng, remote_ip=ip).greeting), [220], ip)

    def test_connection_limit(self) -> None:
        factory = SMTPFactory(engine(["hosts_allow max_conn_ip 2"]))

        def arrive(ip: str = "192.0.2.1") -> tuple[Any, StringTransport]:
            protocol = factory.buildProtocol(IPv4Address("TCP", ip, 40000))
            transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000),
                                        hostAddress=IPv4Address("TCP", "127.0.0.1", 25))
            protocol.makeConnection(transport)
            return protocol, transport

        first, second = arrive(), arrive()
        self.assertTrue(first[1].value().startswith(b"220 ") and second[1].value().startswith(b"220 "))
        third = arrive()
        self.assertEqual(third[1].value(),
                         b"451 4.7.1 Sorry, too many connections from 192.0.2.1, try again later\r\n")
        self.assertTrue(arrive("192.0.2.2")[1].value().startswith(b"220 "))
        for protocol, _ in (third, first):
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(arrive()[1].value().startswith(b"220 "))

    def test_limit_from_config_file_and_hook_keyword(self) -> None:
        eng = make_engine(["hosts_allow"], {"max_conn_ip": "1"})
        txn = make_transaction(eng)
        result = self.successResultOf(run_hook(eng, "pre-connection", txn, remote_ip="192.0.2.1",
                                               connections_from_ip=2))
        self.assertEqual(result.code, DENYSOFT)
        result = self.successResultOf(run_hook(eng, "pre-connection", txn, remote_ip="192.0.2.1",
                                               connections_from_ip=2, max_conn_ip=5))
        self.assertEqual(result.code, DECLINED)
