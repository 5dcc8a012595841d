"""Bytes in, replies out: line splitting, pipelining, timeouts, and feeding the message receiver.

One command is in flight at a time: while its hook chain runs the transport
is paused and later pipelined input waits in the buffer, so replies always
come out in order. At the two points where a client must wait for us
without talking (before the greeting, after DATA before 354) the transport
keeps reading a little, so a client that talks anyway is noted as an early
talker on its connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from qptwisted.core.codes import LOGINFO
from qptwisted.mail.connection import Connection, TLSInfo
from qptwisted.smtp.receiver import MessageReceiver
from qptwisted.smtp.session import Session

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine


class ListenerContext:
    """What a protocol needs from the listener that made it: its engine and connection counts."""

    engine: Engine

    def opened(self, ip: str) -> tuple[int, int]:
        """Count a new connection; returns (connections, connections from ``ip``)."""
        raise NotImplementedError

    def closed(self, ip: str) -> None:
        """Forget a connection that ended."""
        raise NotImplementedError


@implementer(IHandshakeListener)
class SMTPProtocol(Protocol):
    """One SMTP connection on the wire; the conversation itself is a :class:`Session`."""

    session: Session
    engine: Engine

    def __init__(self, factory: ListenerContext) -> None:
        self.factory = factory
        self._buffer = b""
        self._busy = False
        self._processing = False
        self._discarding = False
        self._receiver: MessageReceiver | None = None
        self._timer: IDelayedCall | None = None
        self._last = 0.0

    # -- connection lifecycle --------------------------------------------------
    def connectionMade(self) -> None:
        """Build the session and run ``pre-connection`` and ``connect``; greet after."""
        self.engine = engine = self.factory.engine
        engine.acquire()
        peer, host = self.transport.getPeer(), self.transport.getHost()  # type: ignore[union-attr]
        connection = Connection(getattr(peer, "host", "127.0.0.1"), getattr(peer, "port", 0),
                                getattr(host, "host", "127.0.0.1"), getattr(host, "port", 0))
        self.session = Session(engine, connection, self)
        concurrent, from_ip = self.factory.opened(connection.remote_ip)
        self._last = engine.clock.seconds()
        self._timer = engine.clock.callLater(engine.settings.command_timeout, self._check_idle)
        self._wait(self.session.start(concurrent, from_ip))

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Stop timers and let the session run its end-of-connection hooks."""
        if reason is not None and self.session.connection.tls is None and _is_tls_error(reason):
            self.engine.log(LOGINFO, f"TLS handshake with {self.session.connection.remote_ip} failed: "
                            f"{reason.getErrorMessage()}")
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.factory.closed(self.session.connection.remote_ip)
        self._receiver = None
        try:
            self.session.connection_lost()
        finally:
            self.engine.release()

    def is_idle(self) -> bool:
        """True between transactions: no command in flight, no message arriving, no MAIL given."""
        session = self.session
        return (not session.closed and not self._busy and self._receiver is None
                and session.transaction.sender is None)

    # -- what the session calls ------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send reply bytes."""
        self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        """Close after pending writes; input after this point is ignored."""
        self._buffer = b""
        self.transport.loseConnection()  # type: ignore[union-attr]

    def start_data(self, receiver: MessageReceiver) -> None:
        """Feed what follows to ``receiver`` until the end of the message."""
        self._receiver = receiver

    def start_tls(self, context: IOpenSSLServerConnectionCreator | Any) -> None:
        """Switch to TLS; plaintext pipelined after STARTTLS is discarded (CVE-2011-0411)."""
        self._buffer = b""
        self.transport.startTLS(context)  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        """TLS is up (STARTTLS or an implicit-TLS listener): tell the session what was negotiated."""
        self.session.tls_established(TLSInfo.from_handle(self.transport.getHandle()))  # type: ignore[union-attr]

    # -- input -------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        """Buffer input; process it unless a command is in flight."""
        session = self.session
        if session.closed:
            return  # closing: input is ignored and must not pile up in memory
        self._last = self.engine.clock.seconds()
        self._buffer = self._buffer + data if self._buffer else data
        if self._busy:
            if session.sync_point:
                session.connection.early_talker = True
            if len(self._buffer) > self.engine.settings.max_command_length:
                self.transport.pauseProducing()  # type: ignore[union-attr]
        elif not self._processing:
            self._process()

    def _process(self) -> None:
        session = self.session
        limit = self.engine.settings.max_command_length
        self._processing = True
        try:
            while self._buffer and not self._busy and not session.closed:
                if self._receiver is not None:
                    self._feed_message(self._receiver)
                    continue
                end = self._buffer.find(b"\n")
                if end < 0:
                    if len(self._buffer) > limit:
                        self._discarding = True
                        self._buffer = b""
                    return
                line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
                if self._discarding or end + 1 > limit:
                    self._discarding = False
                    session.respond(500, "Line too long", "5.5.2")
                    continue
                if line[-1:] == b"\r":
                    line = line[:-1]
                self._wait(session.command(line.decode("utf-8", "replace")))
        finally:
            self._processing = False

    def _feed_message(self, receiver: MessageReceiver) -> None:
        waiting = receiver.feed(self._buffer)
        self._buffer = b""
        if receiver.complete:
            self._buffer = receiver.rest or b""
            self._receiver = None
            self._wait(self.session.message_received(receiver))
        elif waiting is not None:
            self._wait(waiting)

    def _wait(self, step: Deferred[Any] | None) -> None:
        if step is None:
            return
        self._busy = True
        session = self.session
        if session.sync_point:
            if self._buffer:  # sent in one go with the command that must be answered first
                session.connection.early_talker = True
        elif not session.closed:
            self.transport.pauseProducing()  # type: ignore[union-attr]
        step.addBoth(self._resume)

    def _resume(self, result: object) -> None:
        self._busy = False
        if self.session.closed:
            return
        self._last = self.engine.clock.seconds()
        self.transport.resumeProducing()  # type: ignore[union-attr]
        if not self._processing:
            self._process()

    # -- timeouts ------------------------------------------------------------------
    def _check_idle(self) -> None:
        settings = self.engine.settings
        limit = settings.timeout if self._receiver is not None else settings.command_timeout
        idle = self.engine.clock.seconds() - self._last
        if self._busy or idle < limit:
            self._timer = self.engine.clock.callLater(limit if self._busy else limit - idle, self._check_idle)
            return
        self._timer = None
        self.session.respond(421, "Connection Timed Out", "4.4.2")
        self.session.disconnect()


def _is_tls_error(reason: Failure) -> bool:
    from OpenSSL import SSL

    return bool(reason.check(SSL.Error))
