"""ident/p0f against a real p0f 3 capturing on the loopback interface.

p0f needs raw capture on ``lo`` (root or CAP_NET_RAW); where it cannot
capture, or is not installed (Debian: ``apt-get install p0f``), the tests
that need it skip with p0f's own reason.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

import qpplugins.ident.p0f as p0f_module  # noqa: I001
from qptwisted import DECLINED, DENY, ConfigError, Engine
from qptwisted.testing import CaptureQueue, make_connection, make_engine, make_transaction, run_hook
from tests.net_support import free_port, stop_process

from .queue_support import PATIENCE


class P0f:
    """p0f on ``lo`` watching one TCP port, with its API socket in a temporary directory."""

    def __init__(self, add_cleanup: Callable[..., object]) -> None:
        binary = shutil.which("p0f", path="/usr/sbin:/usr/bin")
        fingerprints = Path("/etc/p0f/p0f.fp")
        if binary is None or not fingerprints.exists():
            raise unittest.SkipTest("p0f is not installed (Debian: apt-get install p0f)")
        self.root = Path(tempfile.mkdtemp(prefix="qpt-p0f-"))
        add_cleanup(shutil.rmtree, self.root, True)
        self.socket = self.root / "p0f.sock"
        self.port = free_port()
        self.log = self.root / "p0f.log"
        with open(self.log, "wb") as out:
            command = [binary, "-i", "lo", "-s", str(self.socket), "-f", str(fingerprints),
                       f"tcp port {self.port}"]
            self.process = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        add_cleanup(self.stop)
        deadline = time.monotonic() + PATIENCE
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                why = self.log.read_text(errors="replace").strip().splitlines()
                raise unittest.SkipTest("p0f cannot capture on lo: " + (why[-1] if why else "no output"))
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process, PATIENCE)

    def connect_once(self) -> None:
        """Open (and close) one TCP connection to the watched port, and wait until p0f knows 127.0.0.1."""
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", self.port))
            server.listen()
            with socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE) as client:
                accepted, _ = server.accept()
                client.sendall(b"EHLO x\r\n")
                accepted.close()
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_UNIX) as api:
                api.connect(str(self.socket))
                api.sendall(p0f_module.encode_query("127.0.0.1"))
                answer = b""
                while len(answer) < 232:
                    chunk = api.recv(232 - len(answer))
                    if not chunk:
                        break
                    answer += chunk
            if p0f_module.decode_response(answer):
                return
            time.sleep(0.05)
        raise AssertionError("p0f never saw the connection")


_shared: dict[str, Any] = {}


def shared_p0f() -> P0f:
    """One p0f for the test run (stopped at exit) that has seen a connection from 127.0.0.1."""
    if "skip" in _shared:
        raise unittest.SkipTest(_shared["skip"])
    if "p0f" not in _shared:
        try:
            p0f = P0f(lambda function, *args: atexit.register(function, *args))
        except unittest.SkipTest as skip:
            _shared["skip"] = skip.args[0]
            raise
        p0f.connect_once()
        _shared["p0f"] = p0f
    return _shared["p0f"]  # type: ignore[no-any-return]


class P0fTests(unittest.TestCase):
    def setUp(self) -> None:
        self.p0f = shared_p0f()

    def engine(self, extra: str = "", config: dict[str, Any] | None = None) -> Engine:
        engine = make_engine([f"ident/p0f {self.p0f.socket} {extra}"], config=config, clock=reactor)
        self.addCleanup(engine.close)
        return engine

    @inlineCallbacks
    def connect(self, engine: Engine, ip: str = "127.0.0.1", **fields: Any) -> Any:
        txn = make_transaction(engine, connection=make_connection(ip, **fields))
        result = yield run_hook(engine, "connect", txn)
        return result, txn

    @inlineCallbacks
    def test_note_for_a_seen_client(self) -> Any:
        result, txn = yield self.connect(self.engine())
        self.assertEqual(result.code, DECLINED)
        note = txn.connection.notes["p0f"]
        self.assertEqual(note["genre"], "Linux")
        self.assertEqual(note["distance"], 0)
        self.assertGreaterEqual(note["total_conn"], 1)

    @inlineCallbacks
    def test_unseen_client_leaves_no_note(self) -> Any:
        result, txn = yield self.connect(self.engine(), "192.0.2.77")
        self.assertEqual(result.code, DECLINED)
        self.assertNotIn("p0f", txn.connection.notes)
        _, txn = yield self.connect(self.engine(), "::ffff:127.0.0.1")
        self.assertEqual(txn.connection.notes["p0f"]["genre"], "Linux")

    @inlineCallbacks
    def test_smite_os_and_blocked_systems(self) -> Any:
        _, txn = yield self.connect(self.engine("smite_os ^linux"))
        self.assertEqual(txn.connection.notes.get("karma"), -1)
        engine = self.engine(config={"p0f_blocked_operating_systems": ["# old kernels", "linux 2\\.2"]})
        result, _ = yield self.connect(engine)
        self.assertEqual((result.code, result.message),
                         (DENY, "Mail from Linux systems is not accepted here"))
        result, _ = yield self.connect(engine, relay_client=True)
        self.assertEqual(result.code, DECLINED)

    @inlineCallbacks
    def test_headers(self) -> Any:
        engine = make_engine([f"ident/p0f {self.p0f.socket} add_headers 1", CaptureQueue], clock=reactor)
        self.addCleanup(engine.close)
        _, txn = yield self.connect(engine)
        yield run_hook(engine, "data_post", txn)
        self.assertEqual(txn.header.get("X-P0F-Genre"), "Linux")
        self.assertEqual(txn.header.get("X-P0F-Distance"), "0")


class P0fWithoutDaemonTests(unittest.TestCase):
    @inlineCallbacks
    def test_no_p0f_is_no_note_never_a_refusal(self) -> Any:
        path = Path(self.mktemp())
        engine = make_engine([f"ident/p0f {path}"], clock=reactor)
        self.addCleanup(engine.close)
        txn = make_transaction(engine, connection=make_connection(remote_ip="127.0.0.1"))
        self.assertEqual((yield run_hook(engine, "connect", txn)).code, DECLINED)
        self.assertNotIn("p0f", txn.connection.notes)

    def test_codec(self) -> None:
        query = p0f_module.encode_query("192.0.2.1")
        self.assertEqual(len(query), 21)
        self.assertEqual(query[4], 4)
        self.assertEqual(p0f_module.encode_query("2001:db8::1")[4], 6)
        nomatch = p0f_module._RESPONSE.pack(p0f_module.RESPONSE_MAGIC, 0x20, *([0] * 7), 0, 0, 0,
                                            *([b""] * 6))
        self.assertIsNone(p0f_module.decode_response(nomatch))
        bad = p0f_module._RESPONSE.pack(p0f_module.RESPONSE_MAGIC, 0x00, *([0] * 7), 0, 0, 0, *([b""] * 6))
        self.assertRaises(p0f_module.P0fError, p0f_module.decode_response, bad)

    def test_arguments(self) -> None:
        with self.assertRaises(ConfigError):
            make_engine(["ident/p0f"])
        with self.assertRaises(ConfigError):
            make_engine(["ident/p0f /run/p0f.sock version 2"])
        with self.assertRaises(ConfigError):
            make_engine(["ident/p0f /run/p0f.sock smite_os ("])
