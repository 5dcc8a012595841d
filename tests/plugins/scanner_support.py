"""What the content-scanner tests share: the real daemons (one of each per test run), an SMTP
dialogue that waits for asynchronous hooks, a DKIM key, a scripted milter and a scripted rspamd.

The scripted servers are stand-ins for the actions and failures the real
daemons do not show on demand (a milter that replaces the body or answers
garbage, rspamd's soft reject); they are labelled as such wherever used.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial import unittest
from twisted.web import resource, server

from qptwisted import OK, HookAnswer, Plugin, Transaction
from qptwisted.core.replies import Reply
from qptwisted.testing import SMTPDialogue
from qptwisted.testing.daemons import Daemon, DaemonUnavailable

PATIENCE = 60.0
_shared: dict[str, Any] = {}


def shared(key: str, start: Callable[..., Daemon], *args: Any, **kwargs: Any) -> Daemon:
    """One daemon per test run (stopped at exit); SkipTest with the reason when it cannot start."""
    if f"{key}:skip" in _shared:
        raise unittest.SkipTest(_shared[f"{key}:skip"])
    if key not in _shared:
        try:
            _shared[key] = start(*args, **kwargs)
        except DaemonUnavailable as err:
            _shared[f"{key}:skip"] = str(err)
            raise unittest.SkipTest(str(err)) from None
    daemon: Daemon = _shared[key]
    if daemon.process.poll() is not None:
        raise AssertionError(f"{daemon.name} died: {daemon.output()[-1500:]}")
    return daemon


def dkim_key() -> tuple[bytes, bytes]:
    """An RSA key for DKIM tests: (private key PEM, the public key's DNS record)."""
    if "dkim" not in _shared:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        _shared["dkim"] = (pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public))
    return _shared["dkim"]  # type: ignore[no-any-return]


def dkim_verify(message: bytes) -> bool:
    """dkimpy's verdict on ``message`` (LF or CRLF), the key of :func:`dkim_key` as the only DNS."""
    import dkim

    record = dkim_key()[1]
    wire = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return bool(dkim.verify(wire, dnsfunc=lambda name, timeout=5: record))


async def settle(timeout: float = 10.0) -> None:
    """Wait until no client connection is left in the reactor (trial wants a clean reactor)."""
    waited = 0.0
    while any(isinstance(s, tcp.Client) or type(s).__name__ == "Client"
              for s in reactor.getReaders() + reactor.getWriters()):  # type: ignore[attr-defined]
        if waited > timeout:
            return
        await deferLater(reactor, 0.02, lambda: None)  # type: ignore[arg-type]
        waited += 0.02


_FINAL = re.compile(rb"^\d{3}(?: [^\r\n]*)?\r$", re.MULTILINE)


class AsyncDialogue:
    """:class:`SMTPDialogue` for hooks that answer later (real daemons): each call waits for its replies."""

    def __init__(self, engine: Any, remote_ip: str = "192.0.2.1") -> None:
        self.smtp = SMTPDialogue(engine, remote_ip=remote_ip)
        self.greeting: list[Reply] = []

    async def start(self) -> list[Reply]:
        """Wait for the greeting (the connect hooks may take a while)."""
        self.greeting = self.smtp.greeting or await self._wait(1)
        return self.greeting

    async def _wait(self, count: int) -> list[Reply]:
        waited = 0.0
        while len(_FINAL.findall(self.smtp.transport.value())) < count and not self.smtp.closed:
            if waited > PATIENCE:
                raise AssertionError(f"no reply after {PATIENCE}s: {self.smtp.transport.value()!r}")
            await deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
            waited += 0.01
        return self.smtp.replies()

    async def send(self, *lines: str) -> list[Reply]:
        """Send command lines one at a time; their replies."""
        out: list[Reply] = []
        for line in lines:
            self.smtp.protocol.dataReceived(f"{line}\r\n".encode())
            out += await self._wait(1)
        return out

    async def message(self, data: bytes | str) -> list[Reply]:
        """The message after 354 (dot-stuffed, final dot added); the reply to the final dot."""
        raw = data.encode() if isinstance(data, str) else data
        lines = raw.replace(b"\r\n", b"\n").split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
        self.smtp.protocol.dataReceived(stuffed + b".\r\n")
        return await self._wait(1)

    async def deliver(self, sender: str, recipients: list[str], data: bytes | str,
                      helo: str = "client.test") -> list[Reply]:
        """EHLO (first time), MAIL, RCPT..., DATA and the message; every reply."""
        out = [] if self.smtp.session.connection.hello else await self.send(f"EHLO {helo}")
        out += await self.send(f"MAIL FROM:{sender}")
        for rcpt in recipients:
            out += await self.send(f"RCPT TO:{rcpt}")
        out += await self.send("DATA")
        if out[-1].code == 354:
            out += await self.message(data)
        return out

    async def close(self) -> None:
        """The client goes away; wait for the connections it used to close."""
        self.smtp.close()
        await settle()


# -- a scripted milter ------------------------------------------------------------------------------
def milter_packet(command: bytes, data: bytes = b"") -> bytes:
    """One milter packet (written here independently of qptwisted.lib.milter)."""
    return struct.pack("!I", len(data) + 1) + command + data


Answer = list[bytes] | Callable[[bytes], list[bytes]] | str


class _MilterProtocol(Protocol):
    def __init__(self, milter: ScriptedMilter) -> None:
        self.milter = milter
        self.buffer = b""

    def connectionMade(self) -> None:
        self.milter.connections.append(self)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.milter.connections:
            self.milter.connections.remove(self)
        self.milter.closed += 1

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            (length,) = struct.unpack("!I", self.buffer[:4])
            if len(self.buffer) < 4 + length:
                return
            command, payload = self.buffer[4:5], self.buffer[5:4 + length]
            self.buffer = self.buffer[4 + length:]
            self.milter.received.append((command, payload))
            self.answer(command, payload)

    def answer(self, command: bytes, payload: bytes) -> None:
        milter = self.milter
        if command == b"O":
            self.transport.write(milter_packet(b"O", struct.pack("!III", milter.version, milter.actions,
                                                                  milter.steps) + milter.symlists))
            return
        if command in (b"D", b"A"):
            return
        if command == b"Q":
            self.transport.loseConnection()
            return
        if milter.no_reply.get(command, 0) & milter.steps:
            return
        answer = milter.answers.get(command, [milter_packet(b"c")])
        if answer == "close":
            self.transport.loseConnection()
        elif answer == "garbage":
            self.transport.write(b"\x00\x00\x00\x05zzzzz")
        elif answer == "silent":
            pass
        else:
            packets = answer(payload) if callable(answer) else answer
            self.transport.write(b"".join(packets))


class ScriptedMilter:
    """A stand-in milter on 127.0.0.1: records every packet, answers from ``answers``.

    ``answers`` maps a command (``b"M"``, ``b"E"`` ...) to a list of reply
    packets, a function of the packet's data giving them, or ``"close"``,
    ``"garbage"``, ``"silent"``. Unlisted events get *continue*.
    """

    #: the SMFIP_NR_* bit of each command, to stay silent where the MTA expects no reply
    no_reply = {b"C": 0x1000, b"H": 0x2000, b"M": 0x4000, b"R": 0x8000, b"T": 0x10000, b"L": 0x80,
                b"N": 0x40000, b"B": 0x80000}

    def __init__(self, case: unittest.TestCase, answers: dict[bytes, Answer] | None = None,
                 version: int = 6, actions: int = 0x1FF, steps: int = 0, symlists: bytes = b"") -> None:
        self.answers = dict(answers or {})
        self.version, self.actions, self.steps, self.symlists = version, actions, steps, symlists
        self.received: list[tuple[bytes, bytes]] = []
        self.connections: list[_MilterProtocol] = []
        self.closed = 0
        self.port = reactor.listenTCP(0, Factory.forProtocol(lambda: _MilterProtocol(self)),  # type: ignore
                                      interface="127.0.0.1")
        case.addCleanup(self.stop)

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port.getHost().port}"

    def commands(self) -> bytes:
        """The commands received so far, in order, macros left out (``b"OCHMRTLLNBE"``)."""
        return b"".join(command for command, _ in self.received if command != b"D")

    async def seen(self, expected: bytes, timeout: float = 10.0) -> bytes:
        """:meth:`commands` once they are ``expected`` (packets written just now may still be on
        their way), or whatever came after ``timeout``."""
        waited = 0.0
        while self.commands() != expected and waited < timeout:
            await deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
            waited += 0.01
        return self.commands()

    def data(self, command: bytes) -> list[bytes]:
        """The payloads of every ``command`` packet."""
        return [payload for received, payload in self.received if received == command]

    def stop(self) -> Deferred[Any]:
        """Stop listening and drop the connections."""
        for connection in list(self.connections):
            connection.transport.abortConnection()  # type: ignore[union-attr]
        result: Deferred[Any] = self.port.stopListening()  # type: ignore[assignment]
        return result


# -- a scripted rspamd --------------------------------------------------------------------------------
class _CheckV2(resource.Resource):
    isLeaf = True

    def __init__(self, stand_in: RspamdStandIn) -> None:
        super().__init__()
        self.stand_in = stand_in

    def render_POST(self, request: Any) -> bytes | int:  # noqa: N802 - twisted.web's name
        stand_in = self.stand_in
        stand_in.requests.append({
            "path": request.path.decode(),
            "headers": {name.decode(): [value.decode() for value in values]
                        for name, values in request.requestHeaders.getAllRawHeaders()},
            "body": request.content.read()})
        if stand_in.delay is not None:
            stand_in.delay.addCallback(lambda _: self._finish(request))
            return server.NOT_DONE_YET
        return self._answer(request)

    def _answer(self, request: Any) -> bytes:
        stand_in = self.stand_in
        request.setResponseCode(stand_in.status)
        if isinstance(stand_in.answer, bytes):
            return stand_in.answer
        return json.dumps(stand_in.answer).encode()

    def _finish(self, request: Any) -> None:
        request.write(self._answer(request))
        request.finish()


class RspamdStandIn:
    """A stand-in for rspamd's ``/checkv2`` on 127.0.0.1 (rspamd's documented JSON answer).

    ``answer`` is the JSON document (or raw bytes) to send, ``status`` the
    HTTP status; every request is kept in ``requests`` (headers and body).
    Setting ``delay`` to a Deferred holds the answer until it fires.
    """

    def __init__(self, case: unittest.TestCase, answer: dict[str, Any] | bytes | None = None,
                 unix: str | None = None) -> None:
        self.answer: dict[str, Any] | bytes = answer or {"action": "no action", "score": 0.5,
                                                         "required_score": 15.0, "symbols": {}}
        self.status = 200
        self.delay: Deferred[None] | None = None
        self.requests: list[dict[str, Any]] = []
        site = server.Site(_CheckV2(self))
        site.noisy = False
        if unix is not None:
            self.port = reactor.listenUNIX(unix, site)  # type: ignore[attr-defined]
            self.address = unix
        else:
            self.port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
            self.address = f"127.0.0.1:{self.port.getHost().port}"
        case.addCleanup(self.port.stopListening)


class Capture(Plugin):
    """A queue plugin that keeps what it would store: the message, the envelope, the notes."""

    name = "test_scanner_capture"

    def register(self, *args: str) -> None:
        self.messages: list[bytes] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.notes: list[dict[str, Any]] = []

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        self.messages.append(transaction.message_bytes())
        self.envelopes.append((str(transaction.sender), [str(rcpt) for rcpt in transaction.recipients]))
        self.notes.append(dict(transaction.notes))
        return OK, "Queued"
