"""The plugin author's test kit, for ``twisted.trial`` test cases.

Run one hook of one plugin::

    engine = make_engine([BlockRecipient])
    txn = make_transaction(engine, sender="<a@example.org>")
    result = self.successResultOf(run_hook(engine, "rcpt", txn, Address.parse("<hans@example.com>")))
    self.assertEqual(result.code, DENY)

Or drive a whole SMTP dialogue in memory against a plugin list::

    smtp = SMTPDialogue(make_engine(["rcpt_ok", "queue/discard"], config={"me": "mx.test"}))
    self.assertEqual(smtp.send("EHLO client.test")[0][0], 250)
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from qptwisted.core.codes import HookResult
from qptwisted.core.engine import Engine
from qptwisted.core.loader import discover, parse_plugin_line
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
                resources: Mapping[str, Any] | None = None) -> Engine:
    """An engine with ``plugins`` loaded in order, on a fresh config directory.

    A plugin is a ``config/plugins`` line (``"rcpt_ok"``, ``"queue/maildir DIR"``),
    a :class:`Plugin` subclass, or ``(subclass, ("arg", ...))``. ``clock``
    defaults to a :class:`~twisted.internet.task.Clock`; the spool goes to a
    temporary directory unless ``config`` names one. Blocking work
    (``defer_to_thread``) runs inline on a fake clock, and on a real thread
    pool when ``clock`` is the reactor (``threads`` says so explicitly).
    ``resources`` are the objects an embedding application would hand over
    (``engine.resources``).
    """
    if threads is None:
        threads = clock is not None and not isinstance(clock, Clock)
    directory = directory or _temporary_directory()
    settings: dict[str, str | Iterable[str]] = {"me": "mx.test", "spool_dir": str(Path(directory) / "spool")}
    settings.update(config or {})
    write_config(directory, settings)
    specs = list(plugins)
    engine = Engine.from_config(directory, clock if clock is not None else Clock(),
                                None if threads else InlineThreads(),  # type: ignore[arg-type]
                                plugin_lines=[spec for spec in specs if isinstance(spec, str)]
                                if all(isinstance(spec, str) for spec in specs) else [],
                                resources=resources)
    if not all(isinstance(spec, str) for spec in specs):
        index = discover(engine.config.plugin_dirs())
        for spec in specs:
            if isinstance(spec, str):
                line = parse_plugin_line(spec)
                engine.add_plugin(index.find(line.name)(engine, line.args, line.instance))
            elif isinstance(spec, tuple):
                engine.add_plugin(spec[0](engine, tuple(spec[1])))
            else:
                engine.add_plugin(spec(engine, ()))
    return engine


def make_connection(remote_ip: str = "192.0.2.1", **fields: Any) -> Connection:
    """A :class:`Connection` as a plugin sees it (no socket behind it)."""
    fields.setdefault("remote_port", 40000)
    return Connection(remote_ip, **fields)


def make_transaction(engine: Engine, connection: Connection | None = None, sender: str | None = None,
                     recipients: Iterable[str] = (), message: bytes | None = None) -> Transaction:
    """A :class:`Transaction` with an envelope and, optionally, a message (LF or CRLF endings)."""
    settings = engine.settings
    transaction = Transaction(connection or make_connection(), settings.spool_dir, settings.size_threshold)
    if sender is not None:
        transaction.sender = Address.parse(sender)
    for rcpt in recipients:
        transaction.add_recipient(Address.parse(rcpt, allow_postmaster=True))
    if message is not None:
        header, body = split_header(message.replace(b"\r\n", b"\n"))
        transaction.raw_header = header
        if body:
            transaction.body_write(body)
    return transaction


def run_hook(engine: Engine, hook: str, transaction: Transaction, *args: Any,
             **kwargs: Any) -> Deferred[HookResult]:
    """Run a hook chain; always a Deferred (use ``successResultOf`` when it is synchronous)."""
    run: Any = engine.hooks.run
    return maybeDeferred(run, hook.replace("-", "_"), transaction, *args, **kwargs)


class SMTPDialogue:
    """An in-memory SMTP connection to ``engine``: send lines, read replies.

    Nothing touches the network; timers run on ``engine.clock`` (a ``Clock``
    from :func:`make_engine`), so ``engine.clock.advance(300)`` tests timeouts.
    """

    def __init__(self, engine: Engine, remote_ip: str = "192.0.2.1", local_port: int = 25) -> None:
        address = IPv6Address if ":" in remote_ip else IPv4Address
        self.engine = engine
        self.factory = SMTPFactory(engine)
        self.protocol: SMTPProtocol = self.factory.buildProtocol(  # type: ignore[assignment]
            address("TCP", remote_ip, 40000))
        self.transport = StringTransport(peerAddress=address("TCP", remote_ip, 40000),
                                         hostAddress=address("TCP", "127.0.0.1", local_port))
        self.protocol.makeConnection(self.transport)
        self.greeting = self.replies()

    @property
    def session(self) -> Any:
        """The :class:`~qptwisted.smtp.session.Session` behind the connection."""
        return self.protocol.session

    @property
    def closed(self) -> bool:
        """True once the server closed (or is closing) the connection."""
        return bool(self.transport.disconnecting)

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
                helo: str = "client.test") -> list[Reply]:
        """EHLO (if needed), MAIL, RCPT..., DATA and the message; all replies after the greeting."""
        out = [] if self.session.connection.hello else self.send(f"EHLO {helo}")
        out += self.send(f"MAIL FROM:{sender}")
        for rcpt in recipients:
            out += self.send(f"RCPT TO:{rcpt}")
        out += self.send("DATA")
        if out[-1][0] == 354:
            out += self.message(data)
        return out

    def close(self) -> None:
        """The client goes away (connection lost)."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        if not getattr(self, "_lost", False):
            self._lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))
