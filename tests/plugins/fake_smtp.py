"""A scriptable SMTP/LMTP server for tests: refuses, defers, stalls or hangs up on cue."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer, protocol
from twisted.protocols.basic import LineReceiver

Answer = str | Callable[["FakeSMTP", str], str | None] | None


class FakeSMTP(LineReceiver):
    """Answers from ``factory.script``: command verb -> reply line, callable, or None (silence)."""

    delimiter = b"\r\n"

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.in_data = False
        self.data: list[bytes] = []
        self.recipients: list[str] = []
        self.sendLine(self.factory.script.get("greeting", "220 fake.test ESMTP").encode())

    def lineReceived(self, line: bytes) -> None:
        factory = self.factory
        if line.upper().startswith(b"BDAT "):  # RFC 3030: the chunk follows the command line
            factory.commands.append(line.decode())
            size, _, last = line.decode().split(" ", 1)[1].partition(" ")
            self.chunk_left, self.chunk_last = int(size), bool(last)
            self.setRawMode()
            if self.chunk_left == 0:
                self.rawDataReceived(b"")
            return
        if self.in_data:
            if line == b".":
                self.in_data = False
                factory.messages.append(b"\r\n".join(self.data) + b"\r\n")
                self.data = []
                if not factory.data_done.called:
                    factory.data_done.callback(None)
                answer = factory.script.get("end", "250 2.0.0 queued as FAKE1")
                self._answer(answer, "end")
                return
            self.data.append(line)
            cut = factory.script.get("cut_after_lines")
            if cut is not None and len(self.data) >= cut:
                self.transport.loseConnection()
            return
        text = line.decode()
        factory.commands.append(text)
        verb = text.split(" ", 1)[0].upper()
        if verb in ("EHLO", "LHLO"):
            ext = factory.script.get("extensions", ["PIPELINING", "8BITMIME"])
            lines = ["fake.test", *ext]
            for item in lines[:-1]:
                self.sendLine(f"250-{item}".encode())
            self.sendLine(f"250 {lines[-1]}".encode())
            return
        if verb == "RCPT":
            self.recipients.append(text)
        default = {"MAIL": "250 2.1.0 ok", "RCPT": "250 2.1.5 ok", "DATA": "354 go", "RSET": "250 ok",
                   "QUIT": "221 bye", "NOOP": "250 ok"}.get(verb, "502 unknown")
        answer = factory.script.get(verb, default)
        if verb == "DATA" and answer and str(answer).startswith("354"):
            self.in_data = True
        if verb == "QUIT":
            self.sendLine(b"221 bye")
            self.transport.loseConnection()
            return
        self._answer(answer, text)

    def rawDataReceived(self, data: bytes) -> None:
        """A BDAT chunk: answer ``BDAT`` (each chunk) or ``end`` (the last) once it is read."""
        taken, rest = data[:self.chunk_left], data[self.chunk_left:]
        self.chunk_left -= len(taken)
        self.data.append(taken)
        if self.chunk_left:
            return
        if self.chunk_last:
            self.factory.messages.append(b"".join(self.data))
            self.data = []
            self._answer(self.factory.script.get("end", "250 2.0.0 queued as FAKE1"), "end")
        else:
            self._answer(self.factory.script.get("BDAT", "250 2.0.0 chunk ok"), "BDAT")
        self.setLineMode(rest)

    def _answer(self, answer: Answer, text: str) -> None:
        if callable(answer):
            answer = answer(self, text)
        if answer is None:
            return
        for reply in answer.split("\n"):
            self.sendLine(reply.encode())

    def connectionLost(self, reason: object = None) -> None:
        self.factory.lost += 1


class FakeSMTPFactory(protocol.ServerFactory):
    protocol = FakeSMTP

    def __init__(self, **script: object) -> None:
        self.script = script
        self.commands: list[str] = []
        self.messages: list[bytes] = []
        self.connections = 0
        self.lost = 0
        self.data_done: defer.Deferred[None] = defer.Deferred()
