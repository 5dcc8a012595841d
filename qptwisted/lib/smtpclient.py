"""A small SMTP/LMTP client for queue plugins: pipelining, STARTTLS, XCLIENT,
XFORWARD, CHUNKING (BDAT) and BINARYMIME, DSN parameters, per-recipient replies,
connection reuse, timeouts on an injectable clock.

Twisted's own ``twisted.mail.smtp`` client answers with one verdict per
message; queue plugins need every recipient's reply (LMTP answers once per
recipient after DATA) and must never tell the client 250 before the
downstream did, so this module keeps the conversation explicit::

    client = await connect_client(endpoint, clock, helo="mx.example.org")
    result = await client.send_message(Envelope("a@example.org", ["b@example.net"]), chunks)
    if result.accepted: ...

Messages are given in the stored form (LF line endings, no dot-stuffing) and
are converted to CRLF while they are written, chunk by chunk, respecting the
transport's flow control: with BDAT (RFC 3030) when the server offers
CHUNKING, else with DATA and dot-stuffing.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from qptwisted.core.replies import Reply, ReplyError, ReplyParser
from qptwisted.mail.dsn import decode_xtext, xtext

#: the largest BDAT chunk sent downstream (the stored message arrives in 64 KiB pieces)
BDAT_CHUNK = 1 << 18


class SMTPClientError(Exception):
    """The downstream broke the conversation (bad reply, timeout, lost connection)."""


class SMTPTimeout(SMTPClientError):
    """The downstream did not answer within the allowed time."""


#: the reply used for a recipient whose fate is unknown because the connection failed
NO_REPLY = Reply(421, None, "connection to downstream failed")


@dataclass(slots=True)
class Envelope:
    """Sender (no angle brackets, ``""`` for the null sender), recipients, MAIL and RCPT parameters.

    ``binary``: a BINARYMIME message, sent with ``BODY=BINARYMIME`` and BDAT;
    its first chunk is the header block (LF endings), the rest is sent as it is.
    """

    sender: str
    recipients: list[str]
    mail_params: list[str] = field(default_factory=list)
    size: int | None = None
    rcpt_params: dict[str, list[str]] = field(default_factory=dict)
    binary: bool = False


@dataclass(slots=True)
class DeliveryResult:
    """What the downstream said to one message.

    ``rcpt`` holds the RCPT reply per recipient; ``data`` the reply after the
    message (SMTP), and ``final`` the reply per recipient after the message
    (LMTP gives one each; for SMTP every accepted recipient shares ``data``).
    A recipient missing from ``final`` was never offered the message.
    """

    mail: Reply | None = None
    rcpt: dict[str, Reply] = field(default_factory=dict)
    data: Reply | None = None
    final: dict[str, Reply] = field(default_factory=dict)

    @property
    def delivered(self) -> list[str]:
        """Recipients the downstream took responsibility for."""
        return [rcpt for rcpt, reply in self.final.items() if 200 <= reply.code < 300]

    @property
    def failed(self) -> dict[str, Reply]:
        """Recipients refused, with the refusing reply (not those merely left unsent)."""
        out: dict[str, Reply] = {}
        for rcpt, reply in self.rcpt.items():
            final = self.final.get(rcpt)
            if final is not None:
                if not 200 <= final.code < 300:
                    out[rcpt] = final
            elif reply.code not in (250, 251):
                out[rcpt] = reply
            elif self.data is not None and self.data.code >= 400:
                out[rcpt] = self.data
            # else: accepted, but the message was not sent because another recipient was refused
        return out


def parse_target(target: str, default_port: int) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port``, ``v6`` or ``/path`` -> (host or path, port or None)."""
    if target.startswith("/"):
        return target, None
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if target.count(":") == 1:
        host, _, port = target.partition(":")
        return host, int(port)
    return target, default_port


def target_endpoint(reactor: Any, host: str, port: int | None, timeout: float) -> IStreamClientEndpoint:
    """The client endpoint of a :func:`parse_target` result: a UNIX socket, an IP address or a host name."""
    if port is None:
        return UNIXClientEndpoint(reactor, host, timeout=int(timeout))
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host.encode("idna"), port, timeout=timeout)
    endpoint = TCP6ClientEndpoint if ip.version == 6 else TCP4ClientEndpoint
    return endpoint(reactor, host, port, timeout=int(timeout))


#: the longest XCLIENT/XFORWARD command sent (Postfix's own client keeps to 512)
MAX_ATTRIBUTE_LINE = 512


def attribute_lines(verb: str, attributes: dict[str, str], offered: set[str]) -> list[str]:
    """``VERB NAME=xtext ...`` commands for the ``offered`` attributes, each within the line bound."""
    lines: list[str] = []
    line = verb
    for key, value in attributes.items():
        if key not in offered:
            continue
        part = f" {key}={xtext(value)}"
        if line != verb and len(line) + len(part) > MAX_ATTRIBUTE_LINE:
            lines.append(line)
            line = verb
        line += part
    if line != verb:
        lines.append(line)
    return lines


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext back to text (``+2B`` is ``+``), leniently, as XCLIENT/XFORWARD servers read it."""
    return decode_xtext(value, strict=False)


def smtp_data(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Stored message chunks (LF endings) to DATA bytes: CRLF, dot-stuffed, terminated."""
    at_line_start = True
    for chunk in chunks:
        if not chunk:
            continue
        out = chunk.replace(b"\r\n", b"\n").replace(b"\n.", b"\n..")
        if at_line_start and out.startswith(b"."):
            out = b"." + out
        at_line_start = out.endswith(b"\n")
        yield out.replace(b"\n", b"\r\n")
    if not at_line_start:
        yield b"\r\n"
    yield b".\r\n"


def smtp_bdat(chunks: Iterable[bytes], binary: bool = False,
              size: int | None = None) -> Iterator[tuple[bytes, list[bytes]]]:
    """Stored message chunks to BDAT commands, each with its chunk: CRLF endings, no dot-stuffing.

    Yields ``(command line, pieces)``; a command's chunk is at most ``size``
    octets (default :data:`BDAT_CHUNK`) unless one stored piece is larger,
    and the last command says LAST. With ``binary`` only the first chunk
    (the header block) is converted.
    """
    size = size or BDAT_CHUNK
    pending: list[bytes] = []
    length = 0
    first = True
    for chunk in chunks:
        if not chunk:
            continue
        if first or not binary:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        first = False
        if length and length + len(chunk) > size:
            yield f"BDAT {length}\r\n".encode(), pending
            pending, length = [], 0
        pending.append(chunk)
        length += len(chunk)
    yield f"BDAT {length} LAST\r\n".encode(), pending


@implementer(IPushProducer)
class SMTPClientProtocol(Protocol):
    """The wire side: send lines, read replies in order, stream a message."""

    max_line = 65536

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._parser = ReplyParser(max_line=self.max_line)
        self._replies: deque[Reply] = deque()
        self._waiter: Deferred[Reply] | None = None
        self._paused: Deferred[None] | None = None
        self.lost: Failure | None = None
        self.connected_deferred: Deferred[SMTPClientProtocol] = Deferred()
        self.closed: Deferred[None] = Deferred()

    # -- Protocol -------------------------------------------------------------
    def connectionMade(self) -> None:
        """Report the connection to whoever connected."""
        self.connected_deferred.callback(self)

    def dataReceived(self, data: bytes) -> None:
        """Hand complete replies to whoever waits for them."""
        try:
            replies = self._parser.feed(data)
        except ReplyError as err:
            self._protocol_error(str(err))
            return
        for reply in replies:
            if self._waiter is not None:
                waiter, self._waiter = self._waiter, None
                waiter.callback(reply)
            else:
                self._replies.append(reply)

    def _protocol_error(self, why: str) -> None:
        self.lost = Failure(SMTPClientError(why))
        self.abort()

    def connectionLost(self, reason: Failure = Failure(ConnectionLost())) -> None:  # noqa: B008
        """Fail the reader that waits and release a writer that waits."""
        if self.lost is None:
            self.lost = Failure(SMTPClientError(f"connection lost: {reason.getErrorMessage()}"))
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.errback(self.lost)
        self._release_writer()
        self.closed.callback(None)

    # -- IPushProducer (flow control while streaming a message) --------------
    def pauseProducing(self) -> None:
        """The transport's buffer is full."""
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        """The transport drained."""
        self._release_writer()

    def stopProducing(self) -> None:
        """The transport is going away."""
        self._release_writer()

    def _release_writer(self) -> None:
        if self._paused is not None:
            paused, self._paused = self._paused, None
            paused.callback(None)

    # -- the API --------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        """True while the connection is up."""
        return self.lost is None and self.transport is not None and self.connected_deferred.called

    def send(self, line: str) -> None:
        """Write one command line."""
        if self.lost is None:
            assert self.transport is not None
            self.transport.write(line.encode("utf-8") + b"\r\n")

    def read_reply(self, timeout: float) -> Deferred[Reply]:
        """The next reply, failing with :class:`SMTPTimeout` (and closing) after ``timeout``."""
        if self._replies:
            return succeed(self._replies.popleft())
        if self.lost is not None:
            return fail(self.lost)
        assert self._waiter is None, "one reader at a time"

        def cancel(deferred: Deferred[Reply]) -> None:
            if self._waiter is deferred:
                self._waiter = None

        waiter: Deferred[Reply] = Deferred(cancel)
        self._waiter = waiter
        timer = self.clock.callLater(timeout, self._timed_out, waiter, timeout)
        waiter.addBoth(_stop_timer, timer)
        return waiter

    def _timed_out(self, waiter: Deferred[Reply], timeout: float) -> None:
        if self._waiter is waiter:
            self._waiter = None
            self.lost = Failure(SMTPTimeout(f"no reply within {timeout:g}s"))
            waiter.errback(self.lost)
            self.abort()

    async def write_message(self, chunks: Iterable[bytes]) -> None:
        """Stream DATA bytes, pausing whenever the transport asks us to."""
        assert self.transport is not None
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        try:
            for piece in chunks:
                if self.lost is not None:
                    break
                self.transport.write(piece)
                if self._paused is not None:
                    await self._paused
        finally:
            if self.transport is not None and self.lost is None:
                self.transport.unregisterProducer()  # type: ignore[attr-defined]

    def abort(self) -> None:
        """Drop the connection now, without QUIT; from now on it is no longer connected."""
        if self.lost is None:
            self.lost = Failure(SMTPClientError("connection aborted"))
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


def _stop_timer(result: Any, timer: IDelayedCall) -> Any:
    if timer.active():
        timer.cancel()
    return result


@dataclass(slots=True)
class Timeouts:
    """Seconds allowed for each step (RFC 5321 4.5.3.2 gives the upper bounds)."""

    connect: float = 30.0
    command: float = 300.0
    data: float = 600.0


class SMTPClient:
    """One conversation with a downstream SMTP or LMTP server.

    Build it with :func:`connect_client`. ``extensions`` maps the upper-cased
    EHLO/LHLO keywords to their parameters.
    """

    def __init__(self, protocol: SMTPClientProtocol, helo: str, lmtp: bool, timeouts: Timeouts) -> None:
        self.protocol = protocol
        self.helo = helo
        self.lmtp = lmtp
        self.timeouts = timeouts
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.greeting: Reply | None = None
        #: set when the session carries a per-client identity (XCLIENT): not reusable
        self.personal = False

    async def command(self, line: str, timeout: float | None = None) -> Reply:
        """Send one command and wait for its reply."""
        self.protocol.send(line)
        return await self.protocol.read_reply(timeout or self.timeouts.command)

    async def hello(self, name: str | None = None) -> Reply:
        """EHLO (or LHLO) with ``name`` (default: ours), falling back to HELO for an old SMTP server."""
        name = name or self.helo
        reply = await self.command(f"{'LHLO' if self.lmtp else 'EHLO'} {name}")
        self.extensions = {}
        if reply.code == 250:
            for line in reply.lines[1:]:
                keyword, _, params = line.partition(" ")
                self.extensions[keyword.upper()] = params
            return reply
        if self.lmtp:
            raise SMTPClientError(f"LHLO refused: {reply}")
        reply = await self.command(f"HELO {name}")
        if reply.code != 250:
            raise SMTPClientError(f"HELO refused: {reply}")
        return reply

    async def starttls(self, context: Any) -> None:
        """STARTTLS, then hello again (RFC 3207)."""
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            raise SMTPClientError(f"STARTTLS refused: {reply}")
        self.protocol.transport.startTLS(context)  # type: ignore[union-attr]
        self.tls = True
        await self.hello()

    async def xclient(self, attributes: dict[str, str]) -> None:
        """Postfix XCLIENT: tell the downstream who the real client is; hello again.

        Only attributes the downstream offers are sent, in commands of at
        most :data:`MAX_ATTRIBUTE_LINE` characters (each answered 220). The
        hello after it carries the client's HELO name when there is one (a
        server may take the name from that EHLO rather than from ``HELO=``).
        """
        offered = set(self.extensions.get("XCLIENT", "").upper().split())
        lines = attribute_lines("XCLIENT", attributes, offered)
        if not lines:
            return
        for line in lines:
            reply = await self.command(line)
            if reply.code != 220:
                raise SMTPClientError(f"XCLIENT refused: {reply}")
        self.personal = True
        helo = attributes.get("HELO", "")
        await self.hello(helo if helo and not helo.startswith("[") else None)

    async def xforward(self, attributes: dict[str, str]) -> None:
        """Postfix XFORWARD: per-transaction client attributes (long ones in several commands)."""
        offered = set(self.extensions.get("XFORWARD", "").upper().split())
        for line in attribute_lines("XFORWARD", attributes, offered):
            reply = await self.command(line)
            if reply.code != 250:
                raise SMTPClientError(f"XFORWARD refused: {reply}")

    async def reset(self) -> bool:
        """RSET; True if the connection is still usable."""
        if not self.protocol.is_connected:
            return False
        try:
            return (await self.command("RSET", min(self.timeouts.command, 30.0))).code == 250
        except SMTPClientError:
            return False

    async def send_message(self, envelope: Envelope, chunks: Iterable[bytes]) -> DeliveryResult:
        """One mail transaction; ``chunks`` is the stored message (LF endings).

        MAIL and every RCPT are pipelined when the server offers PIPELINING.
        DATA is sent only if every recipient was accepted (all or nothing:
        the caller decides what a refusal means); otherwise the transaction
        is reset and the result says which recipient was refused how.
        """
        result = DeliveryResult()
        params = list(envelope.mail_params)
        if envelope.size is not None and "SIZE" in self.extensions:
            params.append(f"SIZE={envelope.size}")
        if envelope.binary:
            if not {"CHUNKING", "BINARYMIME"} <= self.extensions.keys():
                raise SMTPClientError("the downstream offers no BINARYMIME with CHUNKING")
            params.append("BODY=BINARYMIME")
        elif "8BITMIME" in self.extensions and not any(p.upper().startswith("BODY=") for p in params):
            params.append("BODY=8BITMIME")
        mail = f"MAIL FROM:<{envelope.sender}>" + "".join(f" {p}" for p in params)
        rcpts = [f"RCPT TO:<{rcpt}>" + "".join(f" {p}" for p in envelope.rcpt_params.get(rcpt, ()))
                 for rcpt in envelope.recipients]
        timeout = self.timeouts.command
        if "PIPELINING" in self.extensions:
            for line in [mail, *rcpts]:
                self.protocol.send(line)
            result.mail = await self.protocol.read_reply(timeout)
            for rcpt in envelope.recipients:
                result.rcpt[rcpt] = await self.protocol.read_reply(timeout)
        else:
            result.mail = await self.command(mail)
            if result.mail.code == 250:
                for rcpt, line in zip(envelope.recipients, rcpts, strict=True):
                    result.rcpt[rcpt] = await self.command(line)
        if result.mail.code != 250 or not result.rcpt or \
                any(reply.code not in (250, 251) for reply in result.rcpt.values()):
            if result.mail.code != 250:
                result.rcpt = {rcpt: result.mail for rcpt in envelope.recipients}
            await self.reset()
            return result
        if "CHUNKING" in self.extensions:
            failed = await self._send_chunks(chunks, envelope.binary)
            if failed is not None:  # a chunk was refused: the rest were dropped, the state is unknown
                result.data = failed
                result.final = {rcpt: failed for rcpt in envelope.recipients}
                self.abort()
                return result
        else:
            reply = await self.command("DATA")
            if reply.code != 354:
                result.data = reply
                return result
            await self.protocol.write_message(smtp_data(chunks))
        if self.lmtp:
            for rcpt in envelope.recipients:
                try:
                    result.final[rcpt] = await self.protocol.read_reply(self.timeouts.data)
                except SMTPClientError:
                    # the others may already be delivered: report them, and this one as failed
                    result.final[rcpt] = NO_REPLY
        else:
            result.data = await self.protocol.read_reply(self.timeouts.data)
            result.final = {rcpt: result.data for rcpt in envelope.recipients}
        return result

    async def _send_chunks(self, chunks: Iterable[bytes], binary: bool) -> Reply | None:
        """Send the message with BDAT (RFC 3030); the reply of a refused chunk, else None.

        With PIPELINING every chunk goes out at once and the replies of all
        but the last are read afterwards; without, each chunk waits for its
        250. The reply (replies, for LMTP) to the LAST chunk is left to read.
        """
        sent = 0

        def wire() -> Iterator[bytes]:
            nonlocal sent
            for command, pieces in smtp_bdat(chunks, binary):
                sent += 1
                yield command
                yield from pieces

        if "PIPELINING" in self.extensions:
            await self.protocol.write_message(wire())
            replies = [await self.protocol.read_reply(self.timeouts.data) for _ in range(sent - 1)]
            return next((reply for reply in replies if reply.code != 250), None)
        for command, pieces in smtp_bdat(chunks, binary):
            await self.protocol.write_message([command, *pieces])
            if command.endswith(b" LAST\r\n"):
                break
            reply = await self.protocol.read_reply(self.timeouts.data)
            if reply.code != 250:
                return reply
        return None

    def quit(self) -> None:
        """Say QUIT and close without waiting for the answer to matter."""
        if self.protocol.is_connected:
            self.protocol.send("QUIT")
            assert self.protocol.transport is not None
            self.protocol.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection now."""
        self.protocol.abort()


class _ClientFactory(Factory):
    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock

    def buildProtocol(self, addr: Any) -> SMTPClientProtocol:
        protocol = SMTPClientProtocol(self.clock)
        protocol.factory = self
        return protocol


async def connect_client(endpoint: IStreamClientEndpoint, clock: IReactorTime, helo: str,
                         lmtp: bool = False, timeouts: Timeouts | None = None) -> SMTPClient:
    """Connect, read the greeting, say EHLO/LHLO; a ready :class:`SMTPClient`.

    Raises :class:`SMTPClientError` for a greeting other than 220 (the
    connection is closed), a timeout, or a lost connection; connection
    errors of the endpoint propagate as they are.
    """
    timeouts = timeouts or Timeouts()
    connecting = endpoint.connect(_ClientFactory(clock))
    timer = clock.callLater(timeouts.connect, connecting.cancel)
    try:
        protocol: SMTPClientProtocol = await connecting  # type: ignore[assignment]
    except CancelledError as err:
        raise SMTPTimeout(f"connect timed out after {timeouts.connect:g}s") from err
    finally:
        if timer.active():
            timer.cancel()
    client = SMTPClient(protocol, helo, lmtp, timeouts)
    try:
        client.greeting = await protocol.read_reply(timeouts.command)
        if client.greeting.code != 220:
            raise SMTPClientError(f"greeting {client.greeting}")
        await client.hello()
    except BaseException:
        client.quit() if protocol.is_connected else None
        protocol.abort()
        raise
    return client


class ClientPool:
    """Idle connections to one downstream, kept for reuse and closed when idle too long.

    ``size`` 0 disables reuse. Timers run on ``clock``; :meth:`close` drops
    everything (call it when the plugin goes away, and in tests).
    """

    def __init__(self, clock: IReactorTime, size: int = 2, idle: float = 10.0) -> None:
        self.clock = clock
        self.size = size
        self.idle = idle
        self._idle: list[tuple[SMTPClient, IDelayedCall]] = []

    async def take(self) -> SMTPClient | None:
        """An idle connection that still answers RSET, or None."""
        while self._idle:
            client, timer = self._idle.pop()
            if timer.active():
                timer.cancel()
            if await client.reset():
                return client
            client.abort()
        return None

    def give_back(self, client: SMTPClient) -> None:
        """Keep ``client`` for the next message, or close it."""
        if self.size <= 0 or client.personal or not client.protocol.is_connected \
                or len(self._idle) >= self.size:
            client.quit()
            return
        entry: list[Any] = [client]
        timer = self.clock.callLater(self.idle, self._expire, entry)
        entry.append(timer)
        self._idle.append((client, timer))

    def _expire(self, entry: list[Any]) -> None:
        self._idle = [(c, t) for c, t in self._idle if c is not entry[0]]
        entry[0].quit()

    def close(self) -> list[Deferred[None]]:
        """Close every idle connection; Deferreds that fire when they are gone."""
        closing = []
        for client, timer in self._idle:
            if timer.active():
                timer.cancel()
            closing.append(client.protocol.closed)
            client.quit()
        self._idle = []
        return closing
