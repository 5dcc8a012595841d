"""The plugin author's test kit, for ``twisted.trial`` test cases.

Run one hook of one plugin::

    engine = make_engine([BlockRecipient])
    txn = make_transaction(engine, sender="<a@example.org>")
    result = self.successResultOf(run_hook(engine, "rcpt", txn, Address.parse("<hans@example.com>")))
    self.assertEqual(result.code, DENY)

Or drive a whole SMTP dialogue in memory, one call per command::

    smtp = SMTPDialogue(make_engine([BlockRecipient, "rcpt_ok", CaptureQueue]))
    replies = smtp.deliver("<a@example.org>", ["<hans@example.com>"], "Subject: hi\\n\\nhello\\n")
    self.assertEqual(replies.stopped_at, "RCPT TO:<hans@example.com>")
    self.assertEqual(replies[-1], (550, "5.7.1", "Mail to hans not accepted here"))

The engine of :func:`make_engine` runs on a fake clock and does blocking
work inline, so hooks that wait on the engine's clock or on
``defer_to_thread`` answer within the same ``send()`` call.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from qptwisted.core.codes import OK, HookAnswer, HookResult
from qptwisted.core.engine import Engine
from qptwisted.core.loader import discover
from qptwisted.core.plugin import Plugin
from qptwisted.core.replies import Reply, parse_replies
from qptwisted.mail.address import Address
from qptwisted.mail.connection import Connection
from qptwisted.mail.headers import split_header
from qptwisted.mail.transaction import Transaction
from qptwisted.service.server import SMTPFactory
from qptwisted.smtp.protocol import SMTPProtocol

PluginSpec = str | type[Plugin] | tuple[type[Plugin], Sequence[str]]


def write_config(directory: str | Path, config: Mapping[str, str | Iterable[str]]) -> Path:
    """Write config files: ``{"me": "mx.test", "rcpthosts": ["a.test", "b.test"]}``."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for name, value in config.items():
        lines = [value] if isinstance(value, str) else list(value)
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def _temporary_directory() -> str:
    directory = tempfile.mkdtemp(prefix="qptwisted-test-")
    atexit.register(shutil.rmtree, directory, True)
    return directory


class InlineThreads:
    """A stand-in for the engine's thread pool that runs blocking work at once, in the caller's thread.

    With it, a plugin's ``defer_to_thread`` answers synchronously, so a
    dialogue in a test needs no running reactor. ``make_engine`` uses it
    unless asked for real threads.
    """

    inline = True
    started = True

    def stop(self) -> None:
        """Nothing to stop."""


def make_engine(plugins: Iterable[PluginSpec] = (), config: Mapping[str, str | Iterable[str]] | None = None,
                clock: Any = None, directory: str | None = None, threads: bool | None = None,
                resources: Mapping[str, Any] | None = None,
                plugin_dirs: Iterable[str | Path] = ()) -> Engine:
    """An engine with ``plugins`` loaded in order, on a fresh config directory.

    A plugin is a ``config/plugins`` line (``"rcpt_ok"``, ``"queue/maildir DIR"``),
    a :class:`Plugin` subclass, or ``(subclass, ("arg", ...))``; they mix
    freely. ``plugin_dirs`` are searched for plugins by name (your plugin's
    directory). ``clock`` defaults to a :class:`~twisted.internet.task.Clock`;
    the spool goes to a temporary directory unless ``config`` names one.
    Blocking work (``defer_to_thread``) runs inline on a fake clock, and on a
    real thread pool when ``clock`` is the reactor (``threads`` says so
    explicitly). ``resources`` are the objects an embedding application
    would hand over (``engine.resources``).
    """
    if threads is None:
        threads = clock is not None and not isinstance(clock, Clock)
    directory = directory or _temporary_directory()
    settings: dict[str, str | Iterable[str]] = {"me": "mx.test", "spool_dir": str(Path(directory) / "spool")}
    dirs = [str(Path(d).absolute()) for d in plugin_dirs]
    if dirs:
        settings["plugin_dirs"] = dirs
    settings.update(config or {})
    write_config(directory, settings)
    specs = list(plugins)
    names_only = all(isinstance(spec, str) for spec in specs)
    engine = Engine.from_config(directory, clock if clock is not None else Clock(),
                                None if threads else InlineThreads(),  # type: ignore[arg-type]
                                plugin_lines=[str(spec) for spec in specs] if names_only else [],
                                resources=resources)
    if not names_only:
        index = discover(engine.config.plugin_dirs())
        for spec in specs:
            if isinstance(spec, str):
                engine.load(spec, index)
            elif isinstance(spec, tuple):
                engine.add_plugin(spec[0](engine, tuple(spec[1])))
            else:
                engine.add_plugin(spec(engine, ()))
    return engine


def make_connection(remote_ip: str = "192.0.2.1", **fields: Any) -> Connection:
    """A :class:`Connection` as a plugin sees it (no socket behind it)."""
    fields.setdefault("remote_port", 40000)
    notes, auth_results = fields.pop("notes", None), fields.pop("auth_results", None)
    connection = Connection(remote_ip, **fields)
    connection.notes.update(notes or {})
    connection.auth_results.extend(auth_results or ())
    return connection


def make_transaction(engine: Engine, connection: Connection | None = None, sender: str | None = None,
                     recipients: Iterable[str] = (), message: bytes | str | None = None,
                     headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                     body: bytes | str | None = None) -> Transaction:
    """A :class:`Transaction` with an envelope and a message, as a plugin sees it after DATA.

    Give the message whole (``message``, LF or CRLF endings) or as
    ``headers`` (a mapping or ``(name, value)`` pairs) and ``body``;
    ``data_size`` is set as the engine would.
    """
    settings = engine.settings
    transaction = Transaction(connection or make_connection(), settings.spool_dir, settings.size_threshold)
    if sender is not None:
        transaction.sender = Address.parse(sender)
    for rcpt in recipients:
        transaction.add_recipient(Address.parse(rcpt, allow_postmaster=True))
    if headers is not None or body is not None:
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        text = "".join(f"{name}: {value}\n" for name, value in pairs)
        raw_body = body.encode() if isinstance(body, str) else (body or b"")
        message = text.encode() + b"\n" + raw_body
    if message is not None:
        raw = message.encode() if isinstance(message, str) else message
        header, rest = split_header(raw.replace(b"\r\n", b"\n"))
        transaction.raw_header = header
        if rest:
            transaction.body_write(rest)
        transaction.data_size = len(raw.replace(b"\r\n", b"\n"))
    return transaction


def run_hook(engine: Engine, hook: str, transaction: Transaction | None, *args: Any,
             **kwargs: Any) -> Deferred[HookResult]:
    """Run a hook chain; always a Deferred (use ``successResultOf`` when it is synchronous)."""
    run: Any = engine.hooks.run
    return maybeDeferred(run, hook.replace("-", "_"), transaction, *args, **kwargs)


@dataclass(frozen=True)
class Delivered:
    """One message a :class:`CaptureQueue` took: envelope and the stored bytes (with our headers)."""

    sender: str
    recipients: list[str]
    message: bytes

    @property
    def header(self) -> bytes:
        """The header block as stored."""
        return split_header(self.message)[0]

    @property
    def body(self) -> bytes:
        """The body as stored."""
        return split_header(self.message)[1]


class CaptureQueue(Plugin):
    """A queue plugin for tests: keeps every message it is given in ``delivered`` and answers 250."""

    name = "testing/capture"

    def register(self, *args: str) -> None:
        """Start with nothing delivered."""
        self.delivered: list[Delivered] = []

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        """Keep the message."""
        self.delivered.append(Delivered(str(transaction.sender), [str(r) for r in transaction.recipients],
                                        transaction.message_bytes()))
        return OK, "Queued"

    @property
    def messages(self) -> list[bytes]:
        """The stored messages, oldest first."""
        return [delivered.message for delivered in self.delivered]


class Replies(list[Reply]):
    """The replies of :meth:`SMTPDialogue.deliver`, and where the delivery stopped.

    ``stopped_at`` is the command (``"MAIL FROM:<a@example.org>"``,
    ``"RCPT TO:<b@example.org>"``, ``"DATA"``, or ``"."`` for the message)
    whose refusal ended the delivery, or None; ``refused`` lists the RCPT
    commands refused on the way; ``accepted`` is true when the message got its 250.
    """

    stopped_at: str | None = None
    refused: list[str]

    @property
    def accepted(self) -> bool:
        """True when the message was queued."""
        return self.stopped_at is None and bool(self) and self[-1].code == 250


class SMTPDialogue:
    """An in-memory SMTP connection to ``engine``: send lines, read replies.

    Nothing touches the network. Timers run on ``engine.clock`` (a ``Clock``
    from :func:`make_engine`): while a hook waits on it (a delay, a retry), a
    ``send`` moves the clock on until the hook has answered, so one call
    gives the command's reply. ``advance=False`` leaves the clock alone, for
    tests of timing itself (``engine.clock.advance(300)`` then tests timeouts).
    """

    def __init__(self, engine: Engine, remote_ip: str = "192.0.2.1", local_port: int = 25,
                 advance: bool = True) -> None:
        address = IPv6Address if ":" in remote_ip else IPv4Address
        self.engine = engine
        self.advance = advance
        self.factory = SMTPFactory(engine)
        self.protocol: SMTPProtocol = self.factory.buildProtocol(  # type: ignore[assignment]
            address("TCP", remote_ip, 40000))
        self.transport = StringTransport(peerAddress=address("TCP", remote_ip, 40000),
                                         hostAddress=address("TCP", "127.0.0.1", local_port))
        self.protocol.makeConnection(self.transport)
        self._settle()
        self.greeting = self.replies()

    @property
    def session(self) -> Any:
        """The :class:`~qptwisted.smtp.session.Session` behind the connection."""
        return self.protocol.session

    @property
    def closed(self) -> bool:
        """True once the server closed (or is closing) the connection."""
        return bool(self.transport.disconnecting)

    def _settle(self) -> None:
        """Move a fake clock on while a hook waits on it (never past the connection's own deadline)."""
        clock = self.engine.clock
        if not self.advance or not isinstance(clock, Clock):
            return
        for _ in range(10_000):
            if not self.protocol.waiting or self.closed:
                return
            pending = [call for call in clock.getDelayedCalls()
                       if call.active() and call is not self.protocol.deadline_timer]
            if not pending:
                return  # waiting on something outside the engine's clock
            clock.advance(max(0.0, min(call.getTime() for call in pending) - clock.seconds()))

    def replies(self) -> list[Reply]:
        """Replies written since the last call: ``[Reply(250, "2.0.0", "text\\nmore text"), ...]``.

        Each reply equals the tuple ``(code, enhanced status code or None, text)``;
        the bytes are checked as strictly as a careful client would (CRLF after
        every line, one enhanced code per reply).
        """
        raw = self.transport.value()
        self.transport.clear()
        return parse_replies(raw)

    def send_raw(self, data: bytes) -> list[Reply]:
        """Deliver bytes from the client; return the replies they caused."""
        self.protocol.dataReceived(data)
        self._settle()
        return self.replies()

    def send(self, *lines: str) -> list[Reply]:
        """Send command lines (CRLF added) in one packet, as a pipelining client would."""
        return self.send_raw("".join(f"{line}\r\n" for line in lines).encode())

    def message(self, data: bytes | str) -> list[Reply]:
        """Send a message body after ``354``: CRLF endings, dot-stuffing and the final dot added."""
        raw = data.encode() if isinstance(data, str) else data
        lines = raw.replace(b"\r\n", b"\n").split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
        return self.send_raw(stuffed + b".\r\n")

    def deliver(self, sender: str, recipients: Sequence[str], data: bytes | str,
                helo: str = "client.test") -> Replies:
        """EHLO (if needed), MAIL, RCPT..., DATA and the message, one command at a time.

        Returns every reply after the greeting; ``stopped_at`` names the
        first command refused (a refused recipient does not stop the others;
        the delivery stops at DATA only when no recipient was accepted).
        """
        out = Replies()
        out.refused = []
        steps: list[str] = [] if self.session.connection.hello else [f"EHLO {helo}"]
        steps += [f"MAIL FROM:{sender}", *(f"RCPT TO:{rcpt}" for rcpt in recipients), "DATA"]
        for step in steps:
            replies = self.send(step)
            out += replies
            code = replies[-1].code if replies else 0
            if step.startswith("RCPT"):
                if code not in (250, 251):
                    out.refused.append(step)
                continue
            if code not in (250, 354):
                # DATA refused for want of recipients: the delivery really stopped at the first RCPT
                out.stopped_at = out.refused[0] if step == "DATA" and out.refused else step
                return out
        replies = self.message(data)
        out += replies
        if not replies or replies[-1].code != 250:
            out.stopped_at = "."
        return out

    def close(self) -> None:
        """The client goes away (connection lost)."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        if not getattr(self, "_lost", False):
            self._lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


__all__ = ["CaptureQueue", "Delivered", "InlineThreads", "PluginSpec", "Replies", "Reply", "SMTPDialogue",
           "make_connection", "make_engine", "make_transaction", "parse_replies", "run_hook", "write_config"]
