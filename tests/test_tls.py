"""STARTTLS, SMTPS and AUTH over real TLS on 127.0.0.1.

Every certificate is made in-process with ``cryptography``; nothing is
committed. Clients: Python's ``smtplib`` and raw ``ssl`` sockets (in
threads), ``swaks`` and ``openssl s_client`` (subprocesses, skipped when
missing). Each test waits until the server has seen every connection close,
so the reactor is clean.
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from qptwisted import OK, ConfigError, HookAnswer, Plugin, Transaction
from qptwisted.lib.tls import load_bundle_files, make_self_signed
from qptwisted.lib.tls import main as selfsigned_main
from qptwisted.service.server import QPSMTPDService, SMTPFactory
from qptwisted.testing import make_engine, write_config

USER, SECRET = "good@example.com", "secret-pw"
PATIENCE = 60.0


class Capture(Plugin):
    """Queue: keep each message and the connection's TLS info."""

    name = "test_tls_queue"
    messages: list[tuple[bytes, Any]] = []

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        type(self).messages.append((transaction.message_bytes(), transaction.connection.tls))
        return OK


class Logs(Plugin):
    """Logging: keep every line."""

    name = "test_tls_logs"
    lines: list[str] = []

    def hook_logging(self, transaction: Any, level: int, hook: Any, plugin: Any, message: str) -> None:
        type(self).lines.append(message)


class TrackingFactory(SMTPFactory):
    """Fires ``idle()`` Deferreds once every connection it served has closed."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.waiting: list[Deferred[None]] = []

    def closed(self, ip: str) -> None:
        super().closed(ip)
        if self.connections == 0:
            waiting, self.waiting = self.waiting, []
            for d in waiting:
                d.callback(None)

    def idle(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.connections == 0:
            d.callback(None)
        else:
            self.waiting.append(d)
        return d


def read_reply(stream: Any) -> tuple[int, list[str]]:
    """One (multi-line) SMTP reply from a file object."""
    lines = []
    while True:
        line = stream.readline()
        if not line:
            raise ConnectionError("connection closed")
        text = line.decode().rstrip("\r\n")
        lines.append(text[4:])
        if text[3:4] != "-":
            return int(text[:3]), lines


def up_to_starttls(port: int) -> socket.socket:
    """A plain connection that has sent EHLO and STARTTLS and read their replies: ready for the handshake."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    stream = raw.makefile("rb")
    read_reply(stream)
    raw.sendall(b"EHLO client.test\r\nSTARTTLS\r\n")
    read_reply(stream)
    read_reply(stream)
    return raw


def client_context(*cert_pems: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata="".join(pem.decode() for pem in cert_pems))


class TLSTestCase(unittest.TestCase):
    """Starts a loopback server with the tls plugin and a self-signed certificate."""

    timeout = 120

    def setUp(self) -> None:
        Capture.messages = []
        Logs.lines = []
        self.dir = Path(tempfile.mkdtemp(prefix="qptwisted-tls-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.cert, self.key = make_self_signed(["mx.test"])
        (self.dir / "ssl").mkdir()
        (self.dir / "ssl" / "qpsmtpd-server.crt").write_bytes(self.cert)
        (self.dir / "ssl" / "qpsmtpd-server.key").write_bytes(self.key)

    @inlineCallbacks
    def serve(self, config: Mapping[str, str | Iterable[str]] | None = None,
              plugins: Iterable[Any] = ("tls", "auth/flat_file"),
              implicit: bool = False) -> Any:
        """Listen on a free loopback port; returns the port number."""
        self.factory = TrackingFactory(None)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.factory)
        self.port = port.getHost().port
        settings: dict[str, Any] = {"rcpthosts": "mx.test", "flat_auth_pw": f"{USER}:{SECRET}",
                                    "loglevel": "6"}
        if implicit:
            settings["tls_implicit_ports"] = str(self.port)
        settings.update(config or {})
        self.factory.engine = make_engine([Logs, *plugins, "rcpt_ok", Capture], config=settings,
                                          clock=reactor, directory=str(self.dir))

        @inlineCallbacks
        def stop() -> Any:
            yield self.factory.idle()
            yield port.stopListening()
            yield self.factory.engine.close()  # the tls plugin watches its files until then

        self.addCleanup(stop)
        return self.port

    def in_thread(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThread(function, *args)


class STARTTLSTests(TLSTestCase):
    @inlineCallbacks
    def test_smtplib_starttls_login_delivery(self) -> Any:
        port = yield self.serve()

        def client() -> tuple[Any, ...]:
            with smtplib.SMTP("127.0.0.1", port, timeout=PATIENCE) as smtp:
                smtp.ehlo("client.test")
                before = dict(smtp.esmtp_features)
                smtp.starttls(context=client_context(self.cert))
                smtp.ehlo("client.test")
                after = dict(smtp.esmtp_features)
                smtp.login(USER, SECRET)
                refused = smtp.sendmail(USER, ["someone@elsewhere.example"],
                                        b"Subject: over TLS\r\n\r\nhello\r\n")
            return before, after, refused

        before, after, refused = yield self.in_thread(client)
        self.assertIn("starttls", before)
        self.assertNotIn("auth", before)
        self.assertNotIn("starttls", after)
        self.assertEqual(after["auth"].split(), ["PLAIN", "LOGIN", "CRAM-MD5"])
        self.assertEqual(refused, {})
        [(message, tls)] = Capture.messages
        self.assertIn(b"with ESMTPSA", message)
        self.assertRegex(message.decode(), r"with ESMTPSA \(TLSv1\.[23]:[A-Z0-9_-]+ encrypted\);")
        self.assertIn(f"auth=pass (cram-md5) smtp.auth={USER}".encode(), message)  # smtplib's choice
        self.assertTrue(tls.version.startswith("TLSv1."))
        self.assertTrue(tls.cipher)

    @inlineCallbacks
    def test_starttls_injection_discarded_and_state_reset(self) -> Any:
        """CVE-2011-0411: a MAIL FROM pipelined behind STARTTLS is never executed."""
        port = yield self.serve()
        context = client_context(self.cert)

        def client() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as raw:
                plain = raw.makefile("rb")
                read_reply(plain)
                raw.sendall(b"EHLO client.test\r\n")
                seen["ehlo_plain"] = read_reply(plain)[1]
                raw.sendall(b"AUTH PLAIN\r\n")
                seen["auth_plain"] = read_reply(plain)
                raw.sendall(b"STARTTLS now\r\n")
                seen["starttls_args"] = read_reply(plain)[0]
                raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
                seen["starttls"] = read_reply(plain)
                with context.wrap_socket(raw, server_hostname="mx.test") as tls:
                    stream = tls.makefile("rb")
                    tls.sendall(b"NOOP\r\n")
                    seen["first_in_tls"] = read_reply(stream)
                    tls.sendall(b"MAIL FROM:<a@example.org>\r\n")
                    seen["mail_before_ehlo"] = read_reply(stream)[0]
                    tls.sendall(b"EHLO client.test\r\n")
                    seen["ehlo_tls"] = read_reply(stream)[1]
                    tls.sendall(b"STARTTLS\r\n")
                    seen["starttls_again"] = read_reply(stream)[0]
                    tls.sendall(b"QUIT\r\n")
                    seen["quit"] = read_reply(stream)[0]
            return seen

        seen = yield self.in_thread(client)
        self.assertIn("STARTTLS", seen["ehlo_plain"])
        self.assertFalse([line for line in seen["ehlo_plain"] if line.startswith("AUTH")])
        self.assertEqual(seen["auth_plain"][0], 503)
        self.assertIn("TLS required", seen["auth_plain"][1][0])
        self.assertEqual(seen["starttls_args"], 501)
        self.assertEqual(seen["starttls"], (220, ["2.0.0 Ready to start TLS"]))
        self.assertEqual(seen["first_in_tls"], (250, ["2.0.0 OK"]))  # not a reply to the injected MAIL
        self.assertEqual(seen["mail_before_ehlo"], 503)  # RFC 3207: HELO state forgotten
        self.assertIn("AUTH PLAIN LOGIN CRAM-MD5", seen["ehlo_tls"])
        self.assertNotIn("STARTTLS", seen["ehlo_tls"])
        self.assertEqual(seen["starttls_again"], 503)
        self.assertEqual(seen["quit"], 221)

    @inlineCallbacks
    def test_failed_handshake_logged_and_closed(self) -> Any:
        port = yield self.serve()

        def client() -> bytes:
            with up_to_starttls(port) as raw:
                raw.sendall(b"this is not a TLS ClientHello\r\n" * 4)
                rest = b""
                while True:
                    chunk = raw.recv(4096)
                    if not chunk:
                        return rest
                    rest += chunk

        yield self.in_thread(client)
        yield self.factory.idle()
        failed = [line for line in Logs.lines if line.startswith("TLS handshake with 127.0.0.1 failed")]
        self.assertTrue(failed)

    @inlineCallbacks
    def test_minimum_version_configurable(self) -> Any:
        port = yield self.serve({"tls_min_version": "TLSv1.3"})
        context = client_context(self.cert)
        context.maximum_version = ssl.TLSVersion.TLSv1_2

        def client() -> str:
            with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as raw:
                stream = raw.makefile("rb")
                read_reply(stream)
                raw.sendall(b"STARTTLS\r\n")
                read_reply(stream)
                try:
                    context.wrap_socket(raw, server_hostname="mx.test").close()
                except ssl.SSLError as err:
                    return type(err).__name__
                return "handshake succeeded"

        result = yield self.in_thread(client)
        self.assertNotEqual(result, "handshake succeeded")
        yield self.factory.idle()

    def two_connections(self, port: int) -> list[bool]:
        """Two STARTTLS connections, the second offering the first's session: whether each resumed."""
        context = client_context(self.cert)
        session, seen = None, []
        for _ in range(2):
            with up_to_starttls(port) as raw:
                with context.wrap_socket(raw, server_hostname="mx.test", session=session) as tls:
                    seen.append(tls.session_reused)
                    tls.sendall(b"QUIT\r\n")
                    read_reply(tls.makefile("rb"))  # the TLS 1.3 ticket arrives before this reply
                    session = tls.session
        return seen

    @inlineCallbacks
    def resumed(self, config: Mapping[str, str] | None = None) -> Any:
        port = yield self.serve(config)
        seen = yield self.in_thread(self.two_connections, port)
        yield self.factory.idle()
        return seen

    @inlineCallbacks
    def test_returning_client_resumes_its_session(self) -> Any:
        self.assertEqual((yield self.resumed()), [False, True])

    @inlineCallbacks
    def test_session_tickets_can_be_turned_off(self) -> Any:
        self.assertEqual((yield self.resumed({"tls_session_tickets": "0"})), [False, False])

    @inlineCallbacks
    def test_client_certificate_for_plugins(self) -> Any:
        port = yield self.serve({"tls_request_client_cert": "1"})
        client_cert, client_key = make_self_signed(["client.test"])
        (self.dir / "client.pem").write_bytes(client_key + client_cert)
        context = client_context(self.cert)
        context.load_cert_chain(str(self.dir / "client.pem"))

        def client() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=PATIENCE) as smtp:
                smtp.starttls(context=context)
                smtp.sendmail("a@example.org", ["bob@mx.test"], b"Subject: cert\r\n\r\nhi\r\n")

        yield self.in_thread(client)
        [(_, tls)] = Capture.messages
        self.assertEqual(tls.peer_certificate.subject.rfc4514_string(), "CN=client.test")

    @inlineCallbacks
    def test_sni_picks_certificate(self) -> Any:
        certs = {}
        (self.dir / "certs").mkdir()
        for index, name in enumerate(["mx1.test", "mx2.test"]):
            cert, key = make_self_signed([name])
            certs[name] = cert
            (self.dir / "certs" / f"{index}-{name}.pem").write_bytes(key + cert)
        port = yield self.serve({"tls_certdir": "certs"})

        def subject(server_name: str | None) -> str:
            context = client_context(*certs.values())
            if server_name is None:
                context.check_hostname = False
            with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as raw:
                stream = raw.makefile("rb")
                read_reply(stream)
                raw.sendall(b"STARTTLS\r\n")
                read_reply(stream)
                with context.wrap_socket(raw, server_hostname=server_name) as tls:
                    peer = tls.getpeercert()
                    tls.sendall(b"QUIT\r\n")
                    read_reply(tls.makefile("rb"))
            subject: Any = peer["subject"] if peer else ()
            return str(dict(item[0] for item in subject)["commonName"])

        seen = yield self.in_thread(lambda: [subject("mx2.test"), subject("mx1.test"), subject(None)])
        self.assertEqual(seen, ["mx2.test", "mx1.test", "mx1.test"])

    @inlineCallbacks
    def test_swaks_tls_auth(self) -> Any:
        swaks = shutil.which("swaks")
        if swaks is None:
            raise unittest.SkipTest("swaks is not installed")
        port = yield self.serve()
        result = yield self.in_thread(lambda: subprocess.run(
            [swaks, "--server", "127.0.0.1", "--port", str(port), "--tls", "--auth", "LOGIN",
             "--auth-user", USER, "--auth-password", SECRET, "--from", USER,
             "--to", "someone@elsewhere.example", "--ehlo", "client.test", "--header", "Subject: swaks"],
            capture_output=True, timeout=PATIENCE))
        self.assertEqual(result.returncode, 0, result.stdout.decode(errors="replace")[-2000:])
        [(message, _)] = Capture.messages
        self.assertIn(b"ESMTPSA", message)
        self.assertIn(b"Subject: swaks", message)

    @inlineCallbacks
    def test_openssl_s_client_delivery(self) -> Any:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise unittest.SkipTest("openssl is not installed")
        port = yield self.serve()
        (self.dir / "ca.pem").write_bytes(self.cert)
        script = (b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\n"
                  b"Subject: s_client\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        result = yield self.in_thread(lambda: subprocess.run(
            [openssl, "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}", "-quiet",
             "-CAfile", str(self.dir / "ca.pem"), "-verify_return_error", "-verify_hostname", "mx.test"],
            input=script, capture_output=True, timeout=PATIENCE))
        output = result.stdout.decode(errors="replace")
        self.assertIn("250 2.6.0 Queued", output, result.stderr.decode(errors="replace")[-2000:])
        [(message, _)] = Capture.messages
        self.assertIn(b"with ESMTPS (TLSv1.3:", message)


class ImplicitTLSTests(TLSTestCase):
    @inlineCallbacks
    def test_smtps_listener(self) -> Any:
        port = yield self.serve(implicit=True)

        def client() -> dict[str, str]:
            with smtplib.SMTP_SSL("127.0.0.1", port, context=client_context(self.cert),
                                  timeout=PATIENCE) as smtp:
                smtp.ehlo("client.test")
                features = dict(smtp.esmtp_features)
                smtp.login(USER, SECRET)
                smtp.sendmail(USER, ["someone@elsewhere.example"], b"Subject: smtps\r\n\r\nhi\r\n")
            return features

        features = yield self.in_thread(client)
        self.assertNotIn("starttls", features)
        self.assertIn("auth", features)
        [(message, tls)] = Capture.messages
        self.assertIn(b"ESMTPSA", message)
        self.assertIsNotNone(tls)


class ReloadTests(TLSTestCase):
    @inlineCallbacks
    def test_sighup_reload_new_certificate(self) -> Any:
        write_config(self.dir, {"me": "mx.test", "spool_dir": str(self.dir / "spool")})
        service = QPSMTPDService(str(self.dir), clock=reactor, plugin_lines=["tls", "rcpt_ok"])
        factory = TrackingFactory(service.factory.engine)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        number = port.getHost().port

        def peer_cert() -> bytes:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", number), timeout=PATIENCE) as raw:
                stream = raw.makefile("rb")
                read_reply(stream)
                raw.sendall(b"STARTTLS\r\n")
                read_reply(stream)
                with context.wrap_socket(raw) as tls:
                    der = tls.getpeercert(binary_form=True)
                    tls.sendall(b"QUIT\r\n")
                    read_reply(tls.makefile("rb"))
            assert der is not None
            return ssl.DER_cert_to_PEM_cert(der).encode()

        try:
            first = yield self.in_thread(peer_cert)
            new_cert, new_key = make_self_signed(["mx.test"])
            (self.dir / "ssl" / "qpsmtpd-server.crt").write_bytes(new_cert)
            (self.dir / "ssl" / "qpsmtpd-server.key").write_bytes(new_key)
            self.assertTrue(service.reload())
            factory.engine = service.factory.engine
            second = yield self.in_thread(peer_cert)
        finally:
            yield factory.idle()
            yield port.stopListening()
            yield service.engine.close()
        self.assertEqual(first.strip(), self.cert.strip())
        self.assertEqual(second.strip(), new_cert.strip())


class ConfigTests(unittest.SynchronousTestCase):
    def test_missing_certificate_is_a_config_error(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            make_engine(["tls"])
        self.assertIn("qptwisted-selfsigned", str(caught.exception))

    def test_selfsigned_command(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="qptwisted-tls-"))
        self.addCleanup(shutil.rmtree, directory, True)
        self.assertEqual(selfsigned_main(["--config", str(directory), "--host", "mx.example.test"]), 0)
        cert, key = directory / "ssl" / "qpsmtpd-server.crt", directory / "ssl" / "qpsmtpd-server.key"
        self.assertEqual(key.stat().st_mode & 0o777, 0o600)
        self.assertEqual(load_bundle_files(cert, key).names(), ["mx.example.test"])
        self.assertEqual(selfsigned_main(["--config", str(directory)]), 1)  # no overwrite without --force
        make_engine(["tls"], directory=str(directory))  # the plugin loads what it wrote


class TwistdTests(unittest.TestCase):
    """``twistd qpsmtpd`` in a subprocess: a STARTTLS port and an SMTPS port share one certificate."""

    def test_smtps_and_starttls_listeners_and_sighup_reload(self) -> None:
        import signal

        from tests.test_e2e import E2EBase, Server, free_port, wait_for

        cwd = E2EBase.workdir(self)  # type: ignore[arg-type]
        config = E2EBase.config(self, cwd)  # type: ignore[arg-type]
        cert, key = make_self_signed(["mx.test"])
        (config / "ssl").mkdir()
        (config / "ssl" / "qpsmtpd-server.crt").write_bytes(cert)
        (config / "ssl" / "qpsmtpd-server.key").write_bytes(key)
        plugins = (config / "plugins").read_text()
        (config / "plugins").write_text("tls\n" + plugins)
        smtps, plain = free_port(), free_port()
        (config / "tls_implicit_ports").write_text(f"{smtps}\n")
        server = Server(self, cwd, ["--config", str(config),
                                    "--port", f"tcp:{smtps}:interface=127.0.0.1",
                                    "--port", f"tcp:{plain}:interface=127.0.0.1"], wait=False)
        for port in (smtps, plain):
            server.port = port
            server.wait_listening()

        def smtps_cert() -> bytes:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with smtplib.SMTP_SSL("127.0.0.1", smtps, context=context, timeout=PATIENCE) as client:
                client.ehlo("client.test")
                self.assertNotIn("starttls", client.esmtp_features)
                der = client.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
            return ssl.DER_cert_to_PEM_cert(der).encode().strip()

        self.assertEqual(smtps_cert(), cert.strip())
        with smtplib.SMTP("127.0.0.1", plain, timeout=PATIENCE) as client:
            client.starttls(context=client_context(cert))
            client.ehlo("client.test")
            self.assertEqual(client.sendmail("alice@example.org", ["bob@localhost"],
                                             b"Subject: starttls\r\n\r\nhi\r\n"), {})
        [raw] = (cwd / "spool" / "maildir" / "new").iterdir()
        self.assertIn(b"with ESMTPS (TLSv1.", raw.read_bytes())

        new_cert, new_key = make_self_signed(["mx.test"])
        (config / "ssl" / "qpsmtpd-server.crt").write_bytes(new_cert)
        (config / "ssl" / "qpsmtpd-server.key").write_bytes(new_key)
        server.signal(signal.SIGHUP)
        wait_for(lambda: smtps_cert() == new_cert.strip(), "the reloaded certificate on new connections")
