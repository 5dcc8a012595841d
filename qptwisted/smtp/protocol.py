"""Bytes in, replies out: line splitting, pipelining, deadlines, and feeding the message receiver.

One command is in flight at a time: while its hook chain runs the transport
is paused and later pipelined input waits in the buffer, so replies always
come out in order. At the two points where a client must wait for us
without talking (before the greeting, after DATA before 354) the transport
keeps reading a little, so a client that talks anyway is noted as an early
talker on its connection.

The protocol is its transport's producer: when the client does not read
its replies and the transport's buffer passes its bound (64 KiB), the
transport pauses us, and we stop reading and stop answering until it has
drained. A connection's memory is therefore bounded by a constant, never by
what the client sends.

Deadlines that progress does not reset: a whole command line within
``timeoutsmtpd`` of our last answer; a whole message within ``timeout``
plus its size at ``data_min_rate``; a whole session within
``max_session_time``; and ``max_commands`` between two accepted messages.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IOpenSSLServerConnectionCreator,
    IPushProducer,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from qptwisted.core.codes import LOGINFO
from qptwisted.mail.connection import Connection, TLSInfo
from qptwisted.smtp.deadlines import Deadlines, Entry
from qptwisted.smtp.receiver import Receiver
from qptwisted.smtp.session import Session

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine

#: replies collected for one packet before they are sent anyway
_BATCH = 16384


class ListenerContext:
    """What a protocol needs from the listener that made it: its engine and connection counts."""

    engine: Engine

    def opened(self, ip: str) -> tuple[int, int]:
        """Count a new connection; returns (connections, connections from ``ip``)."""
        raise NotImplementedError

    def closed(self, ip: str) -> None:
        """Forget a connection that ended."""
        raise NotImplementedError

    _deadlines: Deadlines | None = None

    @property
    def deadlines(self) -> Deadlines:
        """The one timer the listener's connections share for their deadlines."""
        if self._deadlines is None:
            self._deadlines = Deadlines(self.engine.clock)
        return self._deadlines


@implementer(IHandshakeListener, IPushProducer, IHalfCloseableProtocol)
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
        self._blocked = False  # the client does not read its replies
        self._eof = False  # the client has sent all it will send (it may still read)
        self._reading = True
        self._receiver: Receiver | None = None
        self._step: Deferred[Any] | None = None  # what the command in flight waits for
        self._direct: socket.socket | None = None  # a plain TCP socket replies may be sent on at once
        self._batch: list[bytes] | None = None  # replies collected while a packet is processed
        self._batched = 0
        self._deadline_entry: Entry | None = None  # in the listener's shared Deadlines
        self._started = 0.0  # connection made
        self._turn = 0.0  # the client's turn began: our last answer, or the start of the message
        self._last_byte = 0.0
        self._data_bytes = 0
        self._commands = 0
        self._counted_ip = ""

    # -- connection lifecycle --------------------------------------------------
    def connectionMade(self) -> None:
        """Build the session and run ``pre-connection`` and ``connect``; greet after."""
        self.engine = engine = self.factory.engine
        engine.acquire()
        peer, host = self.transport.getPeer(), self.transport.getHost()  # type: ignore[union-attr]
        connection = Connection(getattr(peer, "host", "127.0.0.1"), getattr(peer, "port", 0),
                                getattr(host, "host", "127.0.0.1"), getattr(host, "port", 0))
        self.session = Session(engine, connection, self)
        # counted under the address it connected with: XCLIENT may change remote_ip later
        self._counted_ip = connection.remote_ip
        concurrent, from_ip = self.factory.opened(connection.remote_ip)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        if isinstance(self.transport, tcp.Connection) and not getattr(self.transport, "TLS", False):
            self._direct = self.transport.socket
        self._started = self._turn = self._last_byte = engine.clock.seconds()
        self._schedule()
        self._wait(self.session.start(concurrent, from_ip))

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Stop timers and let the session run its end-of-connection hooks."""
        if reason is not None and self.session.connection.tls is None and _is_tls_error(reason):
            self.engine.log(LOGINFO, f"TLS handshake with {self.session.connection.remote_ip} failed: "
                            f"{reason.getErrorMessage()}", transaction=self.session.transaction)
        if self._deadline_entry is not None:
            self.factory.deadlines.cancel(self._deadline_entry)
            self._deadline_entry = None
        self.factory.closed(self._counted_ip)
        self._receiver = None
        step, self._step = self._step, None
        if step is not None and not step.called:
            step.cancel()  # the client is gone: stop waiting (a queue delivery still runs to its end)
        try:
            self.session.connection_lost()
        finally:
            self.engine.release()

    @property
    def waiting(self) -> bool:
        """True while a command (or the greeting) waits for its hook chain to answer."""
        return self._busy

    @property
    def deadline_timer(self) -> IDelayedCall | None:
        """The listener's deadline check (the test kit leaves it alone when it moves a clock)."""
        return self.factory.deadlines.timer

    def is_idle(self) -> bool:
        """True between transactions: no command in flight, no message arriving, no MAIL given."""
        session = self.session
        return (not session.closed and not self._busy and self._receiver is None
                and session.transaction.sender is None)

    # -- what the session calls ------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send reply bytes (the replies to one packet of pipelined commands go out together)."""
        batch = self._batch
        if batch is not None:
            batch.append(data)
            self._batched += len(data)
            if self._batched < _BATCH:
                return
            data = b"".join(batch)
            batch.clear()
            self._batched = 0
        self._send(data)

    def flush(self) -> None:
        """Send the replies collected so far now (``queue_post`` runs after the reply is out)."""
        batch = self._batch
        if batch:
            data = b"".join(batch)
            batch.clear()
            self._batched = 0
            self._send(data)

    def _send(self, data: bytes) -> None:
        # A reply that fits the socket's buffer is sent at once: Twisted's way (buffer, ask the
        # reactor for writability, send on the next turn, stop asking) costs two epoll calls and a
        # reactor turn per reply, the larger part of a small message's CPU.
        transport: Any = self.transport
        sock = self._direct
        if sock is not None and not transport.dataBuffer and not transport._tempDataBuffer:
            try:
                sent = sock.send(data)
            except OSError:  # would block, or worse: the transport finds out and tells us
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def close(self) -> None:
        """Close after pending writes; input after this point is ignored."""
        self.flush()
        self._buffer = b""
        # a registered producer keeps a TLS transport open until it goes: nothing more will come from us
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def start_data(self, receiver: Receiver) -> None:
        """Feed what follows to ``receiver`` until the end of the message (or of the BDAT chunk)."""
        self._receiver = receiver
        self._turn = self._last_byte = self.engine.clock.seconds()
        self._data_bytes = 0

    def start_tls(self, context: IOpenSSLServerConnectionCreator | Any) -> None:
        """Switch to TLS; plaintext pipelined after STARTTLS is discarded (CVE-2011-0411)."""
        self.flush()  # the 220 goes out in plaintext
        self._direct = None  # from now on bytes go through the TLS layer
        self._buffer = b""
        self.transport.startTLS(context)  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        """TLS is up (STARTTLS or an implicit-TLS listener): tell the session what was negotiated."""
        self.session.tls_established(TLSInfo.from_handle(self.transport.getHandle()))  # type: ignore[union-attr]

    # -- input -------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        """Buffer input; process it unless a command is in flight or the client does not read."""
        session = self.session
        if session.closed:
            return  # closing: input is ignored and must not pile up in memory
        self._last_byte = self.engine.clock.seconds()
        self._buffer = self._buffer + data if self._buffer else data
        if self._busy or self._blocked:
            if self._busy and session.sync_point:
                session.connection.early_talker = True
            self._update_reading()
        elif not self._processing:
            self._process()

    # -- IHalfCloseableProtocol: a client may pipeline QUIT and shut its sending side --
    def readConnectionLost(self) -> None:
        """The client sent everything (``shutdown(SHUT_WR)``): answer what it sent, then close."""
        self._eof = True
        if not self._busy and not self._processing:
            self._process()

    def writeConnectionLost(self) -> None:
        """We will write no more: nothing to do, the connection is closing."""

    # -- IPushProducer: the transport tells us whether the client reads its replies --
    def pauseProducing(self) -> None:
        """The client's unread replies passed the transport's bound: stop answering and reading."""
        self._blocked = True
        self._update_reading()

    def resumeProducing(self) -> None:
        """The client caught up: go on with what it sent meanwhile."""
        self._blocked = False
        self._update_reading()
        if not self._busy and not self._processing and not self.session.closed:
            self._process()

    def stopProducing(self) -> None:
        """The connection is going away; ``connectionLost`` follows."""
        self._blocked = True

    def _update_reading(self) -> None:
        """Read from the socket only while the input can be used, and never more than a line ahead.

        While a command is in flight, or while the client does not read its
        replies, input waits in the buffer; once more than a command line's
        worth waits, the socket is paused. (Pausing at once would cost two
        epoll calls per command that waits for a plugin, and would stall a
        TLS handshake, which pauses its producer until it is done.)
        """
        if self.session.closed:
            return  # closing: the transport stops reading by itself
        wanted = not ((self._busy or self._blocked)
                      and len(self._buffer) > self.engine.settings.max_command_length)
        if wanted != self._reading:
            self._reading = wanted
            if wanted:
                self.transport.resumeProducing()  # type: ignore[union-attr]
            else:
                self.transport.pauseProducing()  # type: ignore[union-attr]

    def _process(self) -> None:
        session = self.session
        settings = self.engine.settings
        limit = settings.max_command_length
        self._processing = True
        self._batch = []
        try:
            while self._buffer and not self._busy and not self._blocked and not session.closed:
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
                self._commands += 1
                if settings.max_commands and self._commands > settings.max_commands:
                    session.respond(421, f"{settings.me} Too many commands, closing connection", "4.7.0")
                    session.disconnect()
                    return
                self._turn = self.engine.clock.seconds()
                self._wait(session.command(line.decode("utf-8", "replace")))
        finally:
            self._processing = False
            self.flush()
            self._batch = None
            if self._eof and not self._busy and not session.closed:
                # everything the client sent before closing its side has been answered
                self.session.disconnect()
            else:
                self._update_reading()

    def _feed_message(self, receiver: Receiver) -> None:
        self._data_bytes += len(self._buffer)
        waiting = receiver.feed(self._buffer)
        self._buffer = b""
        if receiver.complete:
            self._buffer = receiver.rest or b""
            self._receiver = None
            self._wait(self.session.message_received(receiver))
        elif waiting is not None:
            self._wait(waiting)

    def message_accepted(self) -> None:
        """A message was queued: the command count starts again (``max_commands``)."""
        self._commands = 0

    def _wait(self, step: Deferred[Any] | None) -> None:
        if step is None:
            return
        self._busy = True
        self._step = step
        session = self.session
        if session.sync_point and self._buffer:
            session.connection.early_talker = True  # sent in one go with what must be answered first
        self._update_reading()
        step.addBoth(self._resume)

    def _resume(self, result: object) -> None:
        self._busy = False
        self._step = None
        if self.session.closed:
            return
        self._turn = self.engine.clock.seconds()
        self._update_reading()
        if not self._processing:
            self._process()

    # -- deadlines -----------------------------------------------------------------
    def _deadline(self) -> tuple[float, str]:
        """When the connection must next be checked, and what it would be cut for."""
        settings = self.engine.settings
        if self._busy:
            # our turn: the plugins' own timeouts bound it; the session maximum waits for the answer
            return self.engine.clock.seconds() + settings.command_timeout, ""
        if self._receiver is not None:
            idle = self._last_byte + settings.timeout
            rate = settings.data_min_rate
            total = self._turn + settings.timeout + (self._data_bytes / rate if rate else float("inf"))
            deadline, why = min((idle, "Connection Timed Out"),
                                (total, "Message too slow, closing connection"))
        else:
            deadline, why = self._turn + settings.command_timeout, "Connection Timed Out"
        if settings.max_session_time:
            deadline, why = min((deadline, why), (self._started + settings.max_session_time,
                                                  "Session too long, closing connection"))
        return deadline, why

    def _schedule(self) -> None:
        self._deadline_entry = self.factory.deadlines.add(self._deadline()[0], self)

    def deadline_passed(self) -> None:
        """The shared deadline timer's call: cut the connection if its time is really up."""
        self._deadline_entry = None
        deadline, why = self._deadline()
        if not why or self.engine.clock.seconds() < deadline:
            self._schedule()
            return
        self.session.respond(421, why, "4.4.2")
        self.session.disconnect()

def _is_tls_error(reason: Failure) -> bool:
    from OpenSSL import SSL

    return bool(reason.check(SSL.Error))
