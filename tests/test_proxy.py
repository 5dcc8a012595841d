"""The PROXY layer in front of the SMTP protocol: in memory, and over loopback TCP with TLS."""

from __future__ import annotations

import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from qptwisted import DECLINED, HookAnswer, Plugin, Transaction
from qptwisted.core.replies import parse_replies
from qptwisted.lib.tls import make_self_signed
from qptwisted.service.proxy import ProxyReceiver
from qptwisted.service.proxyheader import v1_header, v2_header
from qptwisted.service.server import SMTPFactory, drain
from qptwisted.smtp.protocol import SMTPProtocol
from qptwisted.testing import CaptureQueue, make_engine

PATIENCE = 60.0
PROXIES = ["127.0.0.1", "::1", "10.0.0.0/8  # the load balancers"]


class Seen(Plugin):
    """Records what pre-connection and connect saw, and keeps the log lines."""

    name = "test_proxy_seen"
    log_lines: list[str] = []

    def register(self, *args: str) -> None:
        self.seen: list[tuple[str, str, int, int]] = []

    def hook_pre_connection(self, transaction: Transaction, remote_ip: Any = None, remote_port: Any = None,
                            local_ip: Any = None, local_port: Any = None, connections: Any = None,
                            connections_from_ip: Any = None) -> HookAnswer:
        self.seen.append(("pre", remote_ip, remote_port, local_port))
        return DECLINED

    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        c = transaction.connection
        self.seen.append(("connect", c.remote_ip, c.remote_port, c.local_port))
        return DECLINED

    def hook_logging(self, transaction: Any, level: int, hook: Any, plugin: Any, message: str) -> None:
        type(self).log_lines.append(message)


class Wire:
    """One in-memory connection through the listener's factory."""

    def __init__(self, factory: SMTPFactory, peer: str, port: int = 50000) -> None:
        address = IPv6Address if ":" in peer else IPv4Address
        self.protocol = factory.buildProtocol(address("TCP", peer, port))
        self.transport = StringTransport(peerAddress=address("TCP", peer, port),
                                         hostAddress=address("TCP", "::1" if ":" in peer else "127.0.0.1",
                                                             2525))
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> list[Any]:
        self.protocol.dataReceived(data)
        return self.replies()

    def replies(self) -> list[Any]:
        raw = self.transport.value()
        self.transport.clear()
        return parse_replies(raw)

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


class ProxyLayerTests(unittest.TestCase):
    def setUp(self) -> None:
        Seen.log_lines = []
        self.clock = Clock()
        self.engine = make_engine([Seen, "rcpt_ok", CaptureQueue], clock=self.clock,
                                  config={"proxy_hosts": PROXIES, "rcpthosts": "example.test",
                                          "proxy_timeout": "5", "loglevel": "6"})
        self.seen = self.engine.plugin("test_proxy_seen").seen  # type: ignore[attr-defined]
        self.factory = SMTPFactory(self.engine)

    def test_v1_header_sets_the_real_client_before_any_hook(self) -> None:
        wire = Wire(self.factory, "127.0.0.1")
        self.assertIsInstance(wire.protocol, ProxyReceiver)
        self.assertEqual((wire.replies(), self.seen), ([], []))  # no greeting before the header
        replies = wire.send(v1_header(("192.0.2.7", 41000), ("198.51.100.25", 25)))
        self.assertEqual(replies[0].code, 220)
        self.assertEqual(self.seen, [("pre", "192.0.2.7", 41000, 25), ("connect", "192.0.2.7", 41000, 25)])
        [ehlo] = wire.send(b"EHLO client.example\r\n")
        self.assertIn("[192.0.2.7]", ehlo.lines[0])
        self.assertTrue(any("PROXY v1 from 127.0.0.1: client 192.0.2.7:41000" in line
                            for line in Seen.log_lines))

    def test_v2_header_in_slow_pieces(self) -> None:
        wire = Wire(self.factory, "10.1.2.3")
        header = v2_header(("2001:db8::9", 6000), ("2001:db8::25", 25), tlvs=b"\x04\x00\x03abc")
        for piece in (header[:5], header[5:14], header[14:20]):
            self.assertEqual(wire.send(piece), [])
            self.clock.advance(1)
        self.assertEqual(self.seen, [])
        [greeting] = wire.send(header[20:])
        self.assertEqual(greeting.code, 220)
        self.assertEqual(self.seen[-1], ("connect", "2001:db8::9", 6000, 25))
        self.clock.advance(10)  # the header timer is gone
        self.assertFalse(wire.closed)

    def test_header_and_commands_in_one_packet(self) -> None:
        wire = Wire(self.factory, "::1")
        replies = wire.send(v2_header(("192.0.2.8", 1), ("192.0.2.25", 25)) + b"EHLO a.example\r\nNOOP\r\n")
        self.assertEqual([r.code for r in replies], [220, 250, 250])
        self.assertIn("[192.0.2.8]", replies[1].lines[0])

    def test_local_keeps_the_proxy_addresses(self) -> None:
        wire = Wire(self.factory, "127.0.0.1", 33333)
        self.assertEqual(wire.send(v2_header(None, None))[0].code, 220)
        self.assertEqual(self.seen[-1], ("connect", "127.0.0.1", 33333, 2525))

    def test_received_names_the_real_client(self) -> None:
        wire = Wire(self.factory, "127.0.0.1")
        wire.send(v1_header(("192.0.2.77", 5000), ("192.0.2.25", 25)))
        codes = [r.code for r in wire.send(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n"
                                           b"RCPT TO:<b@example.test>\r\nDATA\r\n")]
        self.assertEqual(codes, [250, 250, 250, 354])
        self.assertEqual(wire.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")[0].code, 250)
        [stored] = self.engine.plugin("testing/capture").messages  # type: ignore[attr-defined]
        self.assertIn(b"from [192.0.2.77] (HELO c.example) (192.0.2.77)", stored)

    def test_malformed_header_refused_and_logged(self) -> None:
        wire = Wire(self.factory, "127.0.0.1", 40001)
        [reply] = wire.send(b"PROXY TCP4 192.0.2.1 nonsense 1 2\r\n")
        self.assertEqual((reply.code, reply.enhanced), (421, "4.7.0"))
        self.assertIn("Invalid PROXY header", reply.text)
        self.assertTrue(wire.closed)
        self.assertEqual(self.seen, [])
        self.assertTrue(any("refused connection from 127.0.0.1:40001" in line and "not an IPv4" in line
                            for line in Seen.log_lines))
        self.assertEqual(wire.send(b"EHLO more\r\n"), [])  # nothing more is read

    def test_proxy_that_sends_smtp_is_refused(self) -> None:
        wire = Wire(self.factory, "127.0.0.1")
        [reply] = wire.send(b"EHLO client.example\r\n")
        self.assertEqual(reply.code, 421)
        self.assertTrue(wire.closed)
        self.assertTrue(any("no PROXY header" in line for line in Seen.log_lines))

    def test_header_that_never_completes_times_out(self) -> None:
        wire = Wire(self.factory, "127.0.0.1")
        wire.send(b"PROXY TCP4 192.0.2.1 ")
        self.clock.advance(4.9)
        self.assertEqual(wire.replies(), [])
        self.clock.advance(0.2)
        [reply] = wire.replies()
        self.assertEqual(reply.code, 421)
        self.assertIn("PROXY header timeout", reply.text)
        self.assertTrue(wire.closed)
        self.assertTrue(any("no complete PROXY header within 5 s (21 bytes came)" in line
                            for line in Seen.log_lines))

    def test_untrusted_client_talks_smtp_at_once(self) -> None:
        wire = Wire(self.factory, "192.0.2.50")
        self.assertEqual(wire.replies()[0].code, 220)
        self.assertEqual(self.seen[-1][1], "192.0.2.50")
        self.assertEqual(wire.send(b"E"), [])  # "E" cannot start a PROXY header: passed on
        self.assertEqual(wire.send(b"HLO x.example\r\n")[0].code, 250)

    def test_untrusted_client_sending_a_header_is_refused(self) -> None:
        for header in (v1_header(("192.0.2.1", 1), ("192.0.2.2", 25)),
                       v2_header(("192.0.2.1", 1), ("192.0.2.2", 25))):
            wire = Wire(self.factory, "192.0.2.51")
            wire.replies()
            self.assertEqual(wire.send(header[:3]), [])  # undecided yet
            [reply] = wire.send(header[3:])
            self.assertEqual(reply.code, 421)
            self.assertIn("PROXY header not accepted from your address", reply.text)
            self.assertTrue(wire.closed)
        self.assertTrue(any("PROXY header from an address not in proxy_hosts" in line
                            for line in Seen.log_lines))

    def test_per_ip_cap_counts_the_real_client(self) -> None:
        engine = make_engine([Seen], clock=self.clock,
                             config={"proxy_hosts": PROXIES, "max_conn_ip": "1"})
        factory = SMTPFactory(engine)
        first = Wire(factory, "127.0.0.1")
        self.assertEqual(first.send(v1_header(("192.0.2.60", 1), ("192.0.2.2", 25)))[0].code, 220)
        second = Wire(factory, "127.0.0.1")
        [reply] = second.send(v1_header(("192.0.2.60", 2), ("192.0.2.2", 25)))
        self.assertEqual(reply.code, 421)
        self.assertIn("Too many connections from 192.0.2.60", reply.text)
        other = Wire(factory, "127.0.0.1")
        self.assertEqual(other.send(v1_header(("192.0.2.61", 2), ("192.0.2.2", 25)))[0].code, 220)

    def test_drain_sees_proxied_connections(self) -> None:
        wire = Wire(self.factory, "127.0.0.1")
        wire.send(v1_header(("192.0.2.70", 1), ("192.0.2.2", 25)))
        wire.transport.connected = True
        [protocol] = self.factory.live()
        self.assertIsInstance(protocol, SMTPProtocol)
        done = drain(self.factory, 30, self.clock)
        self.assertEqual(wire.replies()[0].code, 421)
        wire.protocol.connectionLost(None)
        self.clock.advance(1)
        self.successResultOf(done)

    def test_without_proxy_hosts_there_is_no_layer(self) -> None:
        factory = SMTPFactory(make_engine([Seen], clock=self.clock))
        self.assertIsInstance(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)), SMTPProtocol)


class ProxyTLSTests(unittest.TestCase):
    """Over loopback: STARTTLS and implicit TLS behind a PROXY header."""

    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        self.dir = Path(tempfile.mkdtemp(prefix="qpt-proxy-tls-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        cert, key = make_self_signed(["mx.test"])
        self.cert = cert
        (self.dir / "ssl").mkdir()
        (self.dir / "ssl" / "qpsmtpd-server.crt").write_bytes(cert)
        (self.dir / "ssl" / "qpsmtpd-server.key").write_bytes(key)
        self.factory = SMTPFactory(None)  # type: ignore[arg-type]
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.factory)
        self.port = port.getHost().port
        self.factory.engine = make_engine(
            ["tls", "rcpt_ok", CaptureQueue], clock=reactor, directory=str(self.dir),
            config={"proxy_hosts": "127.0.0.1", "rcpthosts": "mx.test", "tls_implicit_ports": "465"})
        self.addCleanup(self.factory.engine.close)  # the tls plugin watches its certificate files
        self.addCleanup(port.stopListening)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.cert.decode())

    @inlineCallbacks
    def test_starttls_after_the_header(self) -> Any:
        def client() -> tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE) as raw:
                raw.sendall(v2_header(("192.0.2.90", 1234), ("192.0.2.25", 25)))
                stream = raw.makefile("rb")
                stream.readline()
                raw.sendall(b"STARTTLS\r\n")
                stream.readline()
                with self.context().wrap_socket(raw, server_hostname="mx.test") as tls:
                    reader = tls.makefile("rb")
                    tls.sendall(b"EHLO client.example\r\n")
                    first = reader.readline()
                    while reader.readline()[3:4] == b"-":
                        pass
                    tls.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\n")
                    for _ in range(3):
                        reader.readline()
                    tls.sendall(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
                    queued = reader.readline()
                    reader.readline()
            return first, queued

        first, queued = yield deferToThread(client)
        self.assertIn(b"[192.0.2.90]", first)
        self.assertTrue(queued.startswith(b"250"))
        [stored] = self.factory.engine.plugin("testing/capture").messages  # type: ignore[attr-defined]
        self.assertIn(b"(192.0.2.90)", stored)
        self.assertIn(b"with ESMTPS", stored)

    @inlineCallbacks
    def test_implicit_tls_hello_in_the_same_packet_as_the_header(self) -> Any:
        """The destination port of the header (465) selects implicit TLS; the ClientHello is not lost."""
        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE) as raw:
                incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                tls = self.context().wrap_bio(incoming, outgoing, server_hostname="mx.test")
                try:
                    tls.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                raw.sendall(v1_header(("192.0.2.91", 1), ("192.0.2.25", 465)) + outgoing.read())
                while True:
                    try:
                        tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        if outgoing.pending:
                            raw.sendall(outgoing.read())
                        data = raw.recv(65536)
                        if not data:
                            raise ConnectionError("closed during the handshake") from None
                        incoming.write(data)
                if outgoing.pending:
                    raw.sendall(outgoing.read())
                greeting = b""
                while not greeting.endswith(b"\r\n"):
                    try:
                        greeting += tls.read(4096)
                    except ssl.SSLWantReadError:
                        incoming.write(raw.recv(65536))
                tls.write(b"QUIT\r\n")
                raw.sendall(outgoing.read())
                return greeting

        greeting = yield deferToThread(client)
        self.assertTrue(greeting.startswith(b"220"), greeting)
