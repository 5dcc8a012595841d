"""What the content scanners share: where a daemon listens, a connection with flow control, the
message streamed from the spool, the outage policy and the common arguments.

The stock scanners (``spamassassin``, ``virus/clamdscan``, ``rspamd``,
``milter``) are small because everything they have in common lives here:

* :class:`ScannerAddress` reads ``host:port``, ``[v6]:port``, a Unix socket
  path, ``unix:/path`` and milter-style ``inet:port@host``, and makes the
  Twisted endpoint, with a connect timeout.
* :class:`ScannerConnection` is the client protocol: it is its transport's
  push producer, so :meth:`~ScannerConnection.send` waits while the socket's
  buffer is full, and it reads exact lengths or everything up to the close.
* :func:`message_chunks` yields the stored message in 64 KiB chunks; a body
  spooled to disk is read chunk by chunk on the engine's thread pool, so a
  50 MB message is never in memory and never read on the reactor thread in
  one go. :func:`stream_message` writes them with flow control.
* :class:`ScannerPlugin` declares the common arguments (``on_error``,
  ``connect_timeout``, ``timeout``, ``max_size``, ``skip_relay_clients``,
  ``reject_type``, ``loglevel``) and turns outcomes into replies: a refusal
  (:meth:`~ScannerPlugin.refusal`), a daemon that is down or slow
  (:meth:`~ScannerPlugin.unavailable`: ``defer`` 451 4.7.1, ``accept`` with
  an ``X-Not-Scanned`` header, or ``reject``), and the result note every
  later plugin can read in ``transaction.notes[plugin name]``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer, IReactorTCP
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from qptwisted.core.arguments import REQUIRED, Argument, Kind, arg
from qptwisted.core.codes import (
    DECLINED,
    DENY,
    DENY_DISCONNECT,
    DENYSOFT,
    DENYSOFT_DISCONNECT,
    LOGINFO,
    LOGWARN,
    OK,
    Code,
)
from qptwisted.core.replies import Reply
from qptwisted.lib.policy import PolicyPlugin, reject_type_argument
from qptwisted.mail.transaction import Transaction

if TYPE_CHECKING:
    from qptwisted.core.plugin import Plugin

_T = TypeVar("_T")

#: bytes read from the spool (and written to a scanner) at a time
CHUNK_SIZE = 1 << 16

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class ScannerError(Exception):
    """The scanner could not give an answer: down, slow, or speaking nonsense."""


# -- sizes ------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    """Bytes from ``512000``, ``500k``, ``20M``, ``1G`` (powers of 1024; ``0`` means no limit)."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (500000, 500k, 20M, 1G)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


SIZE = Kind("size (bytes, k, M, G)", lambda value, plugin: parse_size(value))


def size_argument(default: int, help: str = "", **options: Any) -> Any:  # noqa: A002
    """Declare a size in bytes, written ``512000``, ``500k``, ``20M``; 0 means no limit."""
    return Argument(SIZE, default, help, **options)


def format_size(size: int) -> str:
    """``20M``, ``500k`` or bytes, for log lines and help."""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


# -- addresses ----------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class ScannerAddress:
    """Where a scanner daemon listens: a TCP host and port, or a Unix socket path."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    @classmethod
    def parse(cls, text: str, default_port: int | None = None) -> ScannerAddress:
        """Read ``host:port``, ``[::1]:port``, ``host`` (with ``default_port``), ``/path``,
        ``unix:/path``, ``local:/path`` or ``inet:port@host`` / ``inet6:port@host`` (milter style).
        """
        text = text.strip()
        for prefix in ("unix:", "local:"):
            if text.startswith(prefix):
                text = text[len(prefix):]
                if not text.startswith("/"):
                    raise ValueError(f"'{prefix}{text}': a Unix socket needs an absolute path")
        if text.startswith("/"):
            return cls(path=text)
        milter = re.fullmatch(r"inet6?:(\d+)@(.+)", text)
        if milter is not None:
            return cls(host=milter.group(2).strip("[]"), port=_port(milter.group(1)))
        bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
        if bracketed is not None:
            host, port_text = bracketed.group(1), bracketed.group(2)
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        elif ":" in text:
            host, port_text = text, None  # a bare IPv6 address
        else:
            host, port_text = text, None
        if not host:
            raise ValueError(f"{text!r} names no host")
        if port_text is None:
            if default_port is None:
                raise ValueError(f"{text!r} needs a port (host:port) or a socket path (/path)")
            return cls(host=host, port=default_port)
        return cls(host=host, port=_port(port_text))

    def endpoint(self, reactor: Any, timeout: float) -> Any:
        """A client endpoint that gives up connecting after ``timeout`` seconds."""
        if self.path is not None:
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        assert self.host is not None and self.port is not None
        if re.fullmatch(r"[0-9.]+", self.host):
            return TCP4ClientEndpoint(reactor, self.host, self.port, timeout=timeout)
        if ":" in self.host:
            return TCP6ClientEndpoint(reactor, self.host, self.port, timeout=timeout)
        return HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)

    def __repr__(self) -> str:
        return repr(str(self))

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a TCP port")
    return port


def address_argument(default_port: int | None, default: Any = REQUIRED, help: str = "",  # noqa: A002
                     **options: Any) -> Any:
    """Declare where the daemon listens (see :meth:`ScannerAddress.parse`); required without ``default``."""
    kind = Kind("host:port or /socket/path",
                lambda value, plugin: ScannerAddress.parse(value, default_port))
    if isinstance(default, str):
        default = ScannerAddress.parse(default, default_port)
    return Argument(kind, default, help, **options)


# -- the connection -----------------------------------------------------------------------
class Waiters:
    """Coroutines waiting for one kind of event (bytes arrived, the socket takes bytes again)."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: list[Deferred[None]] = []

    async def wait(self) -> None:
        """Until :meth:`wake` (cancellable: a timeout gives up waiting)."""
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        await waiter

    def wake(self) -> None:
        """Let everyone who waits go on."""
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.called:
                waiter.callback(None)


@implementer(IPushProducer, IHalfCloseableProtocol)
class ScannerConnection(Protocol):
    """A client connection to a scanner daemon, with flow control both ways.

    It registers itself as its transport's producer: when the socket's
    buffer fills, :meth:`send` waits until the kernel took the bytes, so a
    writer never piles a message up in memory. What the daemon answers
    collects in :attr:`buffer`; :meth:`read_exactly` and
    :meth:`read_until_close` wait for it.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        #: the daemon closed its side (or the whole connection is gone)
        self.eof = False
        self.lost = False
        self.reason: Failure | None = None
        self._paused = False
        self._writable = Waiters()
        self._readable = Waiters()

    # -- protocol and producer callbacks -------------------------------------------------
    def connectionMade(self) -> None:
        """Start as the transport's producer; small requests go out at once (no Nagle delay)."""
        transport: Any = self.transport
        transport.registerProducer(self, True)
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        """Keep what the daemon said and wake the readers."""
        self.buffer += data
        self._readable.wake()

    def readConnectionLost(self) -> None:
        """The daemon half-closed: nothing more will come."""
        self.eof = True
        self._readable.wake()

    def writeConnectionLost(self) -> None:
        """Our side finished writing."""

    def connectionLost(self, reason: Failure = net_error.ConnectionDone) -> None:  # type: ignore[assignment]
        """The connection is gone: wake everyone who waits."""
        self.eof = self.lost = True
        self.reason = reason
        self._readable.wake()
        self._writable.wake()

    def pauseProducing(self) -> None:
        """The socket's buffer is full."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The socket takes bytes again."""
        self._paused = False
        self._writable.wake()

    def stopProducing(self) -> None:
        """The transport is going away."""
        self._writable.wake()

    # -- what scanners call --------------------------------------------------------------------
    @property
    def closed_reason(self) -> str:
        """Why the connection ended, for messages."""
        if self.reason is None or self.reason.check(net_error.ConnectionDone):
            return "the daemon closed the connection"
        return f"connection lost: {self.reason.getErrorMessage()}"

    async def send(self, data: bytes) -> None:
        """Write ``data``; wait while the socket's buffer is full."""
        if self.lost:
            raise ScannerError(self.closed_reason)
        self.transport.write(data)  # type: ignore[union-attr]
        while self._paused and not self.lost:
            await self._writable.wait()

    async def wait_data(self) -> None:
        """Wait until more bytes arrive or the daemon closes."""
        if not self.eof:
            await self._readable.wait()

    async def read_exactly(self, size: int) -> bytes:
        """The next ``size`` bytes of the answer."""
        while len(self.buffer) < size:
            if self.eof:
                raise ScannerError(f"{self.closed_reason} in the middle of an answer")
            await self.wait_data()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read_until_close(self, limit: int = 1 << 20) -> bytes:
        """Everything the daemon sends until it closes (at most ``limit`` bytes)."""
        while not self.eof:
            if len(self.buffer) > limit:
                raise ScannerError(f"answer longer than {limit} bytes")
            await self.wait_data()
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_until(self, terminator: bytes, limit: int = 1 << 16) -> bytes:
        """The answer up to ``terminator`` (not included), or up to the close."""
        while True:
            end = self.buffer.find(terminator)
            if end >= 0:
                data = bytes(self.buffer[:end])
                del self.buffer[:end + len(terminator)]
                return data
            if self.eof:
                if self.buffer:
                    return bytes(self.buffer)
                raise ScannerError(f"{self.closed_reason} without an answer")
            if len(self.buffer) > limit:
                raise ScannerError(f"answer longer than {limit} bytes")
            await self.wait_data()

    def finish_writing(self) -> None:
        """Half-close: tell the daemon the request is complete."""
        transport: Any = self.transport
        if not self.lost and hasattr(transport, "loseWriteConnection"):
            transport.loseWriteConnection()

    def close(self) -> None:
        """Close at once (whatever is unsent is dropped)."""
        if not self.lost and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


def scanner_reactor(plugin: Plugin) -> Any:
    """The reactor to connect with: the plugin's ``reactor`` if set, the engine's clock if it can
    connect, else the global reactor."""
    reactor = getattr(plugin, "reactor", None)
    if reactor is not None:
        return reactor
    clock = plugin.engine.clock
    if IReactorTCP.providedBy(clock):
        return clock
    from twisted.internet import reactor as global_reactor

    return global_reactor


async def connect(plugin: Plugin, address: ScannerAddress, timeout: float,
                  protocol: type[ScannerConnection] = ScannerConnection) -> ScannerConnection:
    """Open a connection to ``address``; :class:`ScannerError` when it cannot be made in time."""
    endpoint = address.endpoint(scanner_reactor(plugin), timeout)
    attempt: Deferred[Any] = endpoint.connect(Factory.forProtocol(protocol))
    attempt.addTimeout(timeout, plugin.engine.clock)
    try:
        connection: ScannerConnection = await attempt
    except (TimeoutError, net_error.TimeoutError) as err:
        raise ScannerError(f"cannot connect to {address}: no answer within {timeout:g}s") from err
    except (OSError, net_error.ConnectError) as err:
        raise ScannerError(f"cannot connect to {address}: {str(err).rstrip('.')}") from err
    return connection


async def within(plugin: Plugin, seconds: float, work: Coroutine[Any, Any, _T] | Deferred[_T],
                 what: str) -> _T:
    """Await ``work`` for at most ``seconds`` on the engine's clock; :class:`ScannerError` after."""
    deferred: Deferred[_T] = work if isinstance(work, Deferred) else Deferred.fromCoroutine(work)
    deferred.addTimeout(seconds, plugin.engine.clock)
    try:
        return await deferred
    except TimeoutError as err:
        raise ScannerError(f"{what}: no answer within {seconds:g}s") from err


# -- the message ------------------------------------------------------------------------------
async def message_chunks(plugin: Plugin, transaction: Transaction, chunk_size: int = CHUNK_SIZE,
                         crlf: bool = False, header: bool = True) -> AsyncGenerator[bytes, None]:
    """The stored message (or only its body) in chunks of at most ``chunk_size`` bytes.

    A body spooled to disk is read one chunk at a time on the engine's
    thread pool; a body still in memory is cut into chunks in place.
    ``crlf`` turns the stored LF line ends into CRLF (milters want them).
    """
    if header:
        for piece in _pieces(_line_ends(transaction.header_bytes(), crlf), chunk_size):
            yield piece
    spool = transaction.body
    if spool is None or spool.size == 0:
        return
    on_disk = spool.filename is not None
    handle = transaction.body_fh()
    read_size = chunk_size // 2 if crlf else chunk_size
    try:
        while True:
            if on_disk:
                data = await plugin.defer_to_thread(handle.read, read_size)
            else:
                data = handle.read(read_size)
            if not data:
                return
            for piece in _pieces(_line_ends(data, crlf), chunk_size):
                yield piece
    finally:
        handle.close()


def _line_ends(data: bytes, crlf: bool) -> bytes:
    return data.replace(b"\n", b"\r\n") if crlf else data


def _pieces(data: bytes, size: int) -> list[bytes]:
    if len(data) <= size:
        return [data] if data else []
    return [data[start:start + size] for start in range(0, len(data), size)]


def message_size(transaction: Transaction) -> int:
    """Bytes of the stored message as :func:`message_chunks` sends it (LF line ends)."""
    return len(transaction.header_bytes()) + transaction.body_length


async def stream_message(plugin: Plugin, transaction: Transaction, connection: ScannerConnection,
                         frame: Callable[[bytes], bytes] | None = None,
                         stop: Callable[[], bool] | None = None, chunk_size: int = CHUNK_SIZE) -> bool:
    """Write the message to ``connection`` (each chunk through ``frame``), with flow control.

    Stops early, returning False, when ``stop()`` becomes true (the daemon
    already answered, e.g. clamd's size limit) or the connection is gone.
    """
    async with contextlib.aclosing(message_chunks(plugin, transaction, chunk_size)) as chunks:
        async for chunk in chunks:
            if connection.lost or (stop is not None and stop()):
                return False
            await connection.send(frame(chunk) if frame is not None else chunk)
    return True


@implementer(IBodyProducer)
class MessageBodyProducer:
    """The stored message as an HTTP request body (``treq``/``Agent``), streamed with flow control.

    ``length`` is known in advance (``Content-Length``); chunks come from
    :func:`message_chunks`, so a spooled body is read on the thread pool.
    """

    def __init__(self, plugin: Plugin, transaction: Transaction, chunk_size: int = CHUNK_SIZE) -> None:
        self.plugin = plugin
        self.transaction = transaction
        self.chunk_size = chunk_size
        self.length = message_size(transaction)
        self._paused = False
        self._stopped = False
        self._resumed = Waiters()

    def startProducing(self, consumer: Any) -> Deferred[None]:
        """Write the message to ``consumer``; the Deferred fires when all of it was written."""
        finished: Deferred[None] = Deferred()

        def done(result: Any) -> None:
            if self._stopped or finished.called:
                return  # after stopProducing it must never fire
            if isinstance(result, Failure):
                finished.errback(result)
            else:
                finished.callback(None)

        Deferred.fromCoroutine(self._produce(consumer)).addBoth(done)
        return finished

    async def _produce(self, consumer: Any) -> None:
        chunks = message_chunks(self.plugin, self.transaction, self.chunk_size)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                while self._paused and not self._stopped:
                    await self._resumed.wait()
                if self._stopped:
                    return
                consumer.write(chunk)

    def pauseProducing(self) -> None:
        """The connection's buffer is full."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The connection takes bytes again."""
        self._paused = False
        self._resumed.wake()

    def stopProducing(self) -> None:
        """The request was abandoned."""
        self._stopped = True
        self._resumed.wake()


# -- the plugin base ------------------------------------------------------------------------
#: what a refusal code is answered with when a scanner refuses a message
_REFUSALS: dict[Code, tuple[int, str]] = {
    DENY: (550, "5.7.1"), DENY_DISCONNECT: (550, "5.7.1"),
    DENYSOFT: (451, "4.7.1"), DENYSOFT_DISCONNECT: (421, "4.7.1"),
}

ON_ERROR = ("defer", "accept", "reject")


def on_error_argument(default: str) -> Any:
    """Declare ``on_error defer|accept|reject``: the answer while the daemon is down or slow."""
    return arg.choice(ON_ERROR, default, "when the daemon is down, slow or confused: defer (451 4.7.1), "
                      "accept (log, add X-Not-Scanned) or reject (554 5.7.0)")


class ScannerPlugin(PolicyPlugin):
    """The base of the content scanners: common arguments, outage policy, result notes.

    A subclass sets :attr:`daemon` (``"spamd"``, ``"clamd"``) and declares
    where it connects; it may declare ``on_error``, ``max_size`` and
    ``timeout`` again with other defaults.
    """

    #: what the daemon is called in logs and replies
    daemon: ClassVar[str] = "scanner"
    #: the reactor to connect with (tests may set one); None: the engine's clock or the global reactor
    reactor: Any = None

    on_error: str = on_error_argument("defer")
    connect_timeout: float = arg.duration(5, "how long connecting to the daemon may take")
    scan_timeout: float = arg.duration(60, "how long one scan may take in all (connect, send, answer)",
                                       aliases=("timeout",))
    max_size: int = size_argument(0, "skip messages larger than this (logged); 0: no limit")
    skip_relay_clients: bool = arg.bool(False, "do not scan mail from relay clients (authenticated, "
                                        "relayclients)")
    reject_type: str | None = reject_type_argument("perm", "the code of a refusal: perm (550 5.7.1), temp "
                                                   "(451 4.7.1), disconnect, temp_disconnect")

    def register_hook(self, hook: str, method: Callable[..., Any], unshift: bool = False) -> None:
        """Register with a hook timeout above the plugin's own, so our outage policy answers first."""
        timeout = self.connect_timeout + self.scan_timeout + 10
        self.engine.hooks.register(hook, self.plugin_name, method, timeout, unshift, bool(self.fail_open))

    # -- deciding -------------------------------------------------------------------------------
    def skip_reason(self, transaction: Transaction) -> str | None:
        """Why this message is not scanned (logged and noted), or None to scan it."""
        if self.skip_relay_clients and transaction.connection.relay_client:
            return "relay client"
        size = message_size(transaction)
        if self.max_size and size > self.max_size:
            return f"message of {size} bytes is larger than max_size {format_size(self.max_size)}"
        return None

    def skipped(self, transaction: Transaction, reason: str) -> Code:
        """Log and note a message that is not scanned; the chain goes on."""
        self.log(LOGINFO, f"skip: {reason}")
        self.note(transaction, "skipped", reason=reason)
        return DECLINED

    def note(self, transaction: Transaction, result: str, **details: Any) -> dict[str, Any]:
        """Store the outcome in ``transaction.notes[<plugin name>]`` for later plugins."""
        note = {"result": result, "daemon": self.daemon, **details}
        transaction.notes[self.plugin_name] = note
        return note

    # -- answering -----------------------------------------------------------------------------
    def refusal(self, code: Code | None, text: str) -> tuple[Code, Reply]:
        """A refusal with ``code`` (default: the ``reject_type`` one) as its exact reply."""
        if code is None:
            code = self.get_reject_type(DENY)
        number, enhanced = _REFUSALS.get(code, (550, "5.7.1"))
        return code, Reply(number, enhanced, text)

    def unavailable(self, transaction: Transaction, why: str,
                    header: bool = True) -> tuple[Code, Reply] | Code:
        """The answer while the daemon cannot scan, as ``on_error`` says (``header``: add
        ``X-Not-Scanned`` when the message is accepted unscanned)."""
        self.log(LOGWARN, f"{self.daemon} unavailable: {why}; on_error {self.on_error}")
        self.note(transaction, "error", reason=why, action=self.on_error)
        if self.on_error == "accept":
            if header:
                transaction.header.add("X-Not-Scanned", f"{self.plugin_name} on {self.me}: {why}")
            return DECLINED
        if self.on_error == "reject":
            return DENY, Reply(554, "5.7.0", f"Message cannot be checked ({self.daemon} unavailable)")
        return DENYSOFT, Reply(451, "4.7.1", f"Message cannot be checked now ({self.daemon} unavailable), "
                               "try again later")

    async def scan_or_outage(self, transaction: Transaction,
                             scan: Callable[[], Coroutine[Any, Any, _T]]) -> tuple[_T | None, Any]:
        """``(result, None)`` from ``scan()`` within ``connect_timeout + timeout``, or
        ``(None, answer)`` with the outage answer when the daemon could not give one."""
        try:
            result = await within(self, self.connect_timeout + self.scan_timeout, scan(),
                                  f"{self.daemon} scan")
        except CancelledError:
            raise
        except ScannerError as err:
            why = str(err)
        except Exception as err:  # a daemon that answers nonsense must not become a traceback
            why = f"{type(err).__name__}: {err}"
        else:
            return result, None
        return None, self.unavailable(transaction, why)


def discard_answer(plugin: Plugin, transaction: Transaction) -> tuple[Code, str] | Code:
    """The ``queue`` answer for a message a scanner asked to discard: 250, and nothing stored."""
    reason = transaction.notes.get("discard")
    if not reason:
        return DECLINED
    plugin.log(LOGINFO, f"message discarded: {reason}")
    return OK, "Queued"


__all__ = [
    "CHUNK_SIZE", "MessageBodyProducer", "ScannerAddress", "ScannerConnection", "ScannerError",
    "ScannerPlugin", "SIZE",
    "address_argument", "connect", "discard_answer", "format_size", "message_chunks", "message_size",
    "on_error_argument", "parse_size", "scanner_reactor", "size_argument", "stream_message", "within",
]
