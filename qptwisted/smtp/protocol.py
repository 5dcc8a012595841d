"""Bytes in, replies out: line splitting, DATA framing, pipelining, timeouts.

One command is in flight at a time: while its hook chain runs the transport
is paused and later pipelined input waits in the buffer, so replies always
come out in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from qptwisted.core.codes import LOGINFO
from qptwisted.mail.connection import Connection
from qptwisted.smtp.receiver import DataReader
from qptwisted.smtp.session import Session

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine
    from qptwisted.service.server import SMTPFactory


@implementer(IHandshakeListener)
class SMTPProtocol(Protocol):
    """One SMTP connection on the wire; the conversation itself is a :class:`Session`."""

    session: Session
    engine: Engine

    def __init__(self, factory: SMTPFactory) -> None:
        self.factory = factory
        self._buffer = b""
        self._busy = False
        self._processing = False
        self._discarding = False
        self._reader: DataReader | None = None
        self._timer: IDelayedCall | None = None
        self._last = 0.0
        self._watching = False

    # -- connection lifecycle --------------------------------------------------
    def connectionMade(self) -> None:
        """Build the session and run ``pre-connection`` and ``connect``; greet after."""
        self.engine = engine = self.factory.engine
        peer, host = self.transport.getPeer(), self.transport.getHost()  # type: ignore[union-attr]
        connection = Connection(getattr(peer, "host", "127.0.0.1"), getattr(peer, "port", 0),
                                getattr(host, "host", "127.0.0.1"), getattr(host, "port", 0))
        self.session = Session(engine, connection, self)
        concurrent, from_ip = self.factory.opened(connection.remote_ip)
        self._last = engine.clock.seconds()
        self._timer = engine.clock.callLater(engine.command_timeout, self._check_idle)
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
        if self._reader is not None:
            self._reader = None
            self.session.data_aborted()
        self.session.connection_lost()

    # -- what the session calls ------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send reply bytes."""
        self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        """Close after pending writes; input after this point is ignored."""
        self._buffer = b""
        self.transport.loseConnection()  # type: ignore[union-attr]

    def start_data(self, reader: DataReader) -> None:
        """Feed what follows to ``reader`` until the end of the message."""
        self._reader = reader

    def start_tls(self, context: IOpenSSLServerConnectionCreator | Any) -> None:
        """Switch to TLS; plaintext pipelined after STARTTLS is discarded (CVE-2011-0411)."""
        self._buffer = b""
        self.transport.startTLS(context)  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        """TLS is up (STARTTLS or an implicit-TLS listener): tell the session what was negotiated."""
        from qptwisted.lib.tls import tls_info

        self.session.tls_established(tls_info(self.transport.getHandle()))  # type: ignore[union-attr]

    # -- input -------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        """Buffer input; process it unless a command is in flight."""
        if self.session.closed:
            return  # closing: input is ignored and must not pile up in memory
        self._last = self.engine.clock.seconds()
        self._buffer = self._buffer + data if self._buffer else data
        if self._busy and len(self._buffer) > self.engine.max_command_length:
            self.transport.pauseProducing()  # type: ignore[union-attr]
        if not self._busy and not self._processing:
            self._process()

    def watch_input(self) -> None:
        """Keep reading while the current command is in flight (input still waits).

        For plugins such as ``earlytalker`` that check whether the client
        talks before it was answered; see :meth:`input_pending`.
        """
        self._watching = True
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def input_pending(self) -> bool:
        """True if the client sent bytes that no command has consumed yet."""
        return bool(self._buffer)

    def _process(self) -> None:
        session = self.session
        self._processing = True
        try:
            while self._buffer and not self._busy and not session.closed:
                if self._reader is not None:
                    self._feed_data(self._reader)
                    continue
                end = self._buffer.find(b"\n")
                if end < 0:
                    if len(self._buffer) > self.engine.max_command_length:
                        self._discarding = True
                        self._buffer = b""
                    return
                line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
                if self._discarding or end + 1 > self.engine.max_command_length:
                    self._discarding = False
                    session.respond(500, "Line too long", "5.5.2")
                    continue
                if line[-1:] == b"\r":
                    line = line[:-1]
                self._wait(session.command(line.decode("utf-8", "replace")))
        finally:
            self._processing = False

    def _feed_data(self, reader: DataReader) -> None:
        rest = reader.feed(self._buffer)
        session = self.session
        if rest is None:
            self._buffer = b""
            if session.waiting is not None:
                self._wait(session.waiting)
            return
        self._buffer = rest
        self._reader = None
        if session.waiting is not None:
            self._wait(session.waiting.addCallback(lambda _: session.data_end()))
        else:
            self._wait(session.data_end())

    def _wait(self, step: Deferred[Any] | None) -> None:
        if step is None:
            return
        self._busy = True
        watching, self._watching = self._watching, False
        if not watching and not self.session.closed:
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
        engine = self.engine
        limit = engine.timeout if self._reader is not None else engine.command_timeout
        idle = engine.clock.seconds() - self._last
        if self._busy or idle < limit:
            self._timer = engine.clock.callLater(limit if self._busy else limit - idle, self._check_idle)
            return
        self._timer = None
        self.session.respond(421, "Connection Timed Out", "4.4.2")
        self.session.disconnect()


def _is_tls_error(reason: Failure) -> bool:
    from OpenSSL import SSL

    return bool(reason.check(SSL.Error))
