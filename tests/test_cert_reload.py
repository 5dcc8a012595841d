"""Certificates renewed on disk are picked up without a signal, under load, with no failed handshake.

A real server (``twistd qpsmtpd``) with the tls plugin watching its files
every 0.2 s; four client threads do STARTTLS handshakes back to back while
the test rotates the certificate the way renew hooks do it, badly first: a
half-written certificate, then a certificate whose key has not been copied
yet, then the key. Every handshake must succeed and present either the old
or the new certificate; the broken stages are logged and the old
certificate kept.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from twisted.trial import unittest

from qptwisted.lib.filewatch import FileWatch
from qptwisted.lib.tls import make_self_signed
from tests.test_e2e import PATIENCE, E2EBase, Server, free_port, wait_for
from tests.test_metrics import sample, scrape


def _reply(stream: object) -> bytes:
    """Read one (possibly multi-line) reply."""
    while True:
        line = stream.readline()  # type: ignore[attr-defined]
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return bytes(line)


def handshake(port: int) -> str:
    """STARTTLS once; the SHA-256 of the certificate the server presented."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as raw:
        stream = raw.makefile("rb")
        _reply(stream)
        raw.sendall(b"EHLO client.test\r\n")
        _reply(stream)
        raw.sendall(b"STARTTLS\r\n")
        if not _reply(stream).startswith(b"220"):
            raise AssertionError("STARTTLS refused")
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"QUIT\r\n")
            _reply(tls.makefile("rb"))
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def fingerprint(pem: bytes) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest()


class RotationUnderLoadTests(E2EBase):
    def test_rotation_without_signal_and_without_failed_handshakes(self) -> None:
        cwd = self.workdir()
        old_cert, old_key = make_self_signed(["mx.test"])
        new_cert, new_key = make_self_signed(["mx.test"])
        config = self.config(cwd, plugins="tls\nrcpt_ok\nqueue/maildir spool/maildir\n",
                             tls_reload_interval="0.2\n", loglevel="6\n")
        (config / "ssl").mkdir()
        cert_file, key_file = config / "ssl" / "qpsmtpd-server.crt", config / "ssl" / "qpsmtpd-server.key"
        cert_file.write_bytes(old_cert)
        key_file.write_bytes(old_key)
        metrics = free_port()
        server = Server(self, cwd, ["--config", str(config), "--metrics", f"tcp:{metrics}"])

        seen: list[str] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    seen.append(handshake(server.port))
                except BaseException as err:  # every failure is a finding
                    failures.append(err)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(seen) >= 20, "handshakes with the first certificate")

            def refused(count: int) -> bool:
                return server.output().count("renewed certificate files cannot be used") >= count

            cert_file.write_bytes(new_cert[: len(new_cert) // 2])  # a copy in progress
            wait_for(lambda: refused(1), "the half-written certificate to be refused")
            cert_file.write_bytes(new_cert)  # the certificate is there, its key not yet
            wait_for(lambda: refused(2), "the certificate without its key to be refused")
            before = len(seen)
            key_file.write_bytes(new_key)
            wait_for(lambda: fingerprint(new_cert) in seen[before:], "the new certificate to be presented")
            after = len(seen)
            wait_for(lambda: len(seen) >= after + 20, "more handshakes with the new certificate")
        finally:
            stop.set()
            for thread in threads:
                thread.join(PATIENCE)
        self.assertEqual(failures, [])
        self.assertEqual(set(seen), {fingerprint(old_cert), fingerprint(new_cert)})
        self.assertNotIn(fingerprint(old_cert), seen[after + 4:])  # new connections all get the new one
        expiry = sample(scrape(metrics), "qpsmtpd_tls_certificate_expiry_timestamp_seconds", plugin="tls",
                        name="mx.test")
        new_expiry = x509.load_pem_x509_certificate(new_cert).not_valid_after_utc.timestamp()
        self.assertEqual(expiry, new_expiry)  # what an alert on renewals that did not happen reads
        output = server.output()
        self.assertIn("keeping the current certificate", output)
        self.assertIn("certificate reloaded: mx.test", output)
        self.assertIsNone(server.process.poll())

    def test_watching_can_be_turned_off(self) -> None:
        from qptwisted.testing import make_engine

        directory = Path(self.workdir())
        (directory / "ssl").mkdir()
        cert, key = make_self_signed(["mx.test"])
        (directory / "ssl" / "qpsmtpd-server.crt").write_bytes(cert)
        (directory / "ssl" / "qpsmtpd-server.key").write_bytes(key)
        engine = make_engine(["tls"], {"tls_reload_interval": "0"}, directory=str(directory))
        self.addCleanup(engine.close)
        self.assertFalse(hasattr(engine.plugin("tls"), "watch"))
        (directory / "tls_reload_interval").unlink()
        engine = make_engine(["tls"], {}, directory=str(directory))
        self.addCleanup(engine.close)
        self.assertTrue(hasattr(engine.plugin("tls"), "watch"))


class FileWatchTests(unittest.TestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.write_text("one")
        self.calls: list[str] = []
        self.accept = True

    def reload(self) -> bool:
        self.calls.append(self.path.read_text())
        return self.accept

    def test_acts_once_a_change_holds_still(self) -> None:
        watch = FileWatch([self.path], self.reload)
        watch.poll()
        self.assertEqual(self.calls, [])
        self.path.write_text("two, being written")
        watch.poll()
        self.assertEqual(self.calls, [])  # changed since the last look: wait
        self.path.write_text("two")
        watch.poll()
        self.assertEqual(self.calls, [])  # changed again
        watch.poll()
        self.assertEqual(self.calls, ["two"])
        watch.poll()
        self.assertEqual(self.calls, ["two"])

    def test_a_refused_change_is_not_tried_again(self) -> None:
        watch = FileWatch([self.path], self.reload)
        self.accept = False
        self.path.write_text("broken")
        watch.poll()
        watch.poll()
        watch.poll()
        self.assertEqual(self.calls, ["broken"])
        self.accept = True
        self.path.write_text("fixed")
        watch.poll()
        watch.poll()
        self.assertEqual(self.calls, ["broken", "fixed"])

    def test_a_switched_symbolic_link_is_a_change(self) -> None:
        target = Path(self.mktemp())
        target.write_text("one")  # same size and perhaps the same time: only the inode differs
        link = Path(self.mktemp())
        link.symlink_to(self.path.absolute())
        watch = FileWatch([link], lambda: self.calls.append("reload") or True)
        link.unlink()
        link.symlink_to(target.absolute())
        watch.poll()
        watch.poll()
        self.assertEqual(self.calls, ["reload"])
