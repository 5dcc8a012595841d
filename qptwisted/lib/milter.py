"""The MTA side of the Sendmail milter protocol (version 6, with option negotiation).

A :class:`MilterClient` speaks to one milter over one connection, for one
SMTP connection: it negotiates (:meth:`~MilterClient.negotiate`), reports
events (:meth:`~MilterClient.event`: connect, HELO, MAIL, RCPT, DATA), sends
the message (:meth:`~MilterClient.message`: each header, end of headers, the
body in chunks with CRLF line ends, end of message) and collects what the
milter wants changed (:class:`Changes`), and aborts or quits.

Every packet is ``length (4 bytes, network order), command (1 byte), data``.
We offer version 6 and every action and protocol step; the milter answers
with what it wants, and an older milter (version 2, 3 or 4) is spoken to in
its version: no DATA event before 4, no "no reply" steps before 6. Packets
the milter does not expect are never sent.

Postfix's ``milter8.c`` is the model for the corner cases: a header value is
sent without the space after the colon unless the milter asked for
``SMFIP_HDR_LEADSPC``; multi-line values keep their line breaks as LF; a
``SMFIR_CHGHEADER`` index 0 means 1; ``SMFIR_INSHEADER`` 0 is the top.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qptwisted.core.replies import Reply, ReplyError, ReplyParser
from qptwisted.lib.scanner import ScannerConnection, ScannerError, message_chunks, within
from qptwisted.mail.spool import MessageSpool
from qptwisted.mail.transaction import Transaction

if TYPE_CHECKING:
    from qptwisted.core.plugin import Plugin

# commands, MTA to milter
SMFIC_ABORT, SMFIC_BODY, SMFIC_CONNECT, SMFIC_MACRO = b"A", b"B", b"C", b"D"
SMFIC_BODYEOB, SMFIC_HELO, SMFIC_QUIT_NC, SMFIC_HEADER = b"E", b"H", b"K", b"L"
SMFIC_MAIL, SMFIC_EOH, SMFIC_OPTNEG, SMFIC_QUIT = b"M", b"N", b"O", b"Q"
SMFIC_RCPT, SMFIC_DATA, SMFIC_UNKNOWN = b"R", b"T", b"U"

# replies, milter to MTA
SMFIR_ADDRCPT, SMFIR_DELRCPT, SMFIR_ADDRCPT_PAR, SMFIR_SHUTDOWN = b"+", b"-", b"2", b"4"
SMFIR_ACCEPT, SMFIR_REPLBODY, SMFIR_CONTINUE, SMFIR_DISCARD = b"a", b"b", b"c", b"d"
SMFIR_CHGFROM, SMFIR_CONN_FAIL, SMFIR_ADDHEADER, SMFIR_INSHEADER = b"e", b"f", b"h", b"i"
SMFIR_SETSYMLIST, SMFIR_CHGHEADER, SMFIR_PROGRESS, SMFIR_QUARANTINE = b"l", b"m", b"p", b"q"
SMFIR_REJECT, SMFIR_SKIP, SMFIR_TEMPFAIL, SMFIR_REPLYCODE = b"r", b"s", b"t", b"y"

# actions the milter may ask for (SMFIF_*)
SMFIF_ADDHDRS, SMFIF_CHGBODY, SMFIF_ADDRCPT, SMFIF_DELRCPT = 0x01, 0x02, 0x04, 0x08
SMFIF_CHGHDRS, SMFIF_QUARANTINE, SMFIF_CHGFROM, SMFIF_ADDRCPT_PAR = 0x10, 0x20, 0x40, 0x80
SMFIF_SETSYMLIST = 0x100
ACTIONS = 0x1FF

# protocol steps (SMFIP_*): what the milter does not want sent, or will not answer
SMFIP_NOCONNECT, SMFIP_NOHELO, SMFIP_NOMAIL, SMFIP_NORCPT = 0x01, 0x02, 0x04, 0x08
SMFIP_NOBODY, SMFIP_NOHDRS, SMFIP_NOEOH, SMFIP_NR_HDR = 0x10, 0x20, 0x40, 0x80
SMFIP_NOUNKNOWN, SMFIP_NODATA, SMFIP_SKIP, SMFIP_RCPT_REJ = 0x100, 0x200, 0x400, 0x800
SMFIP_NR_CONN, SMFIP_NR_HELO, SMFIP_NR_MAIL, SMFIP_NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
SMFIP_NR_DATA, SMFIP_NR_UNKN, SMFIP_NR_EOH, SMFIP_NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
SMFIP_HDR_LEADSPC = 0x100000

_V2 = SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT | SMFIP_NOBODY | SMFIP_NOHDRS | SMFIP_NOEOH
_NOREPLY = (SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT | SMFIP_NR_DATA | SMFIP_NR_UNKN
            | SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY)
#: the protocol steps each version knows
PROTOCOL: dict[int, int] = {
    2: _V2, 3: _V2 | SMFIP_NOUNKNOWN, 4: _V2 | SMFIP_NOUNKNOWN | SMFIP_NODATA,
    6: _V2 | SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_SKIP | SMFIP_RCPT_REJ | _NOREPLY | SMFIP_HDR_LEADSPC,
}
#: the largest body chunk (SMFIC_BODY) a milter takes
BODY_CHUNK = 65535
#: packets longer than this are a broken milter
MAX_PACKET = 1 << 22

_DECISIONS = {SMFIR_CONTINUE: "continue", SMFIR_ACCEPT: "accept", SMFIR_DISCARD: "discard",
              SMFIR_REJECT: "reject", SMFIR_TEMPFAIL: "tempfail", SMFIR_SHUTDOWN: "shutdown",
              SMFIR_CONN_FAIL: "tempfail", SMFIR_SKIP: "skip"}
_DEFAULT_REPLIES = {
    "reject": Reply(550, "5.7.1", "Command rejected"),
    "tempfail": Reply(451, "4.7.1", "Service unavailable - try again later"),
    "shutdown": Reply(421, "4.7.0", "Service unavailable - closing connection"),
}


class MilterError(ScannerError):
    """The milter broke the protocol, closed, or did not answer in time."""


def packet(command: bytes, data: bytes = b"") -> bytes:
    """One protocol packet."""
    return struct.pack("!I", len(data) + 1) + command + data


def strings(*values: str | bytes) -> bytes:
    """NUL-terminated strings, back to back."""
    return b"".join((value.encode("utf-8", "replace") if isinstance(value, str) else value) + b"\0"
                    for value in values)


def _split_strings(data: bytes, count: int) -> list[bytes]:
    parts = data.split(b"\0")
    if len(parts) < count + 1 or parts[count:] != [b""] * (len(parts) - count):
        raise MilterError(f"malformed packet data {data[:80]!r}")
    return parts[:count]


@dataclass
class Verdict:
    """The milter's answer to one event: ``continue``, ``accept``, ``reject``, ``tempfail``,
    ``discard``, ``shutdown`` or ``skip``; ``reply`` the SMTP reply of a refusal."""

    action: str
    reply: Reply | None = None

    @property
    def refuses(self) -> bool:
        """True for reject, tempfail and shutdown (whatever the reply)."""
        return self.action in ("reject", "tempfail", "shutdown")


@dataclass
class Changes:
    """What the milter asked to change at the end of the message, in order."""

    headers: list[tuple[str, int, str, str]] = field(default_factory=list)  # (op, index, name, value)
    add_recipients: list[tuple[str, str]] = field(default_factory=list)
    delete_recipients: list[str] = field(default_factory=list)
    sender: tuple[str, str] | None = None
    body: MessageSpool | None = None
    quarantine: str | None = None

    _cr: bool = False

    def body_chunk(self, plugin: Plugin, data: bytes) -> None:
        """Store a piece of the replacement body (CRLF on the wire, LF in the spool)."""
        settings = plugin.engine.settings
        if self.body is None:
            self.body = MessageSpool(settings.spool_dir, settings.size_threshold)
        if settings.databytes and self.body.size + len(data) > settings.databytes:
            raise MilterError(f"the replacement body is larger than databytes ({settings.databytes})")
        if self._cr:
            data = b"\r" + data
        self._cr = data.endswith(b"\r")
        self.body.write((data[:-1] if self._cr else data).replace(b"\r\n", b"\n"))

    def body_done(self) -> None:
        """The replacement body is complete (a CR held back at the end of a piece is written)."""
        if self._cr and self.body is not None:
            self.body.write(b"\r")
        self._cr = False

    @property
    def kinds(self) -> list[str]:
        """What kinds of change there are (for notes and logs)."""
        found = [op for op, *_ in self.headers]
        found += ["add_recipient"] * bool(self.add_recipients) + ["delete_recipient"] * bool(
            self.delete_recipients)
        found += ["change_sender"] * bool(self.sender) + ["replace_body"] * bool(self.body)
        return list(dict.fromkeys(found + ["quarantine"] * bool(self.quarantine)))

    def discard_body(self) -> None:
        """Drop a replacement body that will not be used."""
        if self.body is not None:
            self.body.close()
            self.body = None


class MilterClient:
    """One conversation with one milter over ``connection`` (see the module docstring)."""

    def __init__(self, plugin: Plugin, connection: ScannerConnection, timeout: float,
                 version: int = 6) -> None:
        self.plugin = plugin
        self.connection = connection
        self.timeout = timeout
        self.offered_version = version
        self.version = version
        self.actions = 0
        #: the protocol steps the milter asked for (SMFIP_* bits)
        self.steps = 0
        self.macro_lists: dict[int, str] = {}

    # -- packets -------------------------------------------------------------------------------
    def send(self, command: bytes, data: bytes = b"") -> None:
        """Write one packet (the connection's buffer takes it; replies are read in order)."""
        if self.connection.lost:
            raise MilterError(self.connection.closed_reason)
        self.connection.transport.write(packet(command, data))  # type: ignore[union-attr]

    async def read(self) -> tuple[bytes, bytes]:
        """The next packet: ``(command, data)``, within the command timeout."""
        return await within(self.plugin, self.timeout, self._read(), "milter")

    async def _read(self) -> tuple[bytes, bytes]:
        try:
            (length,) = struct.unpack("!I", await self.connection.read_exactly(4))
            if not 1 <= length <= MAX_PACKET:
                raise MilterError(f"bad packet length {length}")
            data = await self.connection.read_exactly(length)
        except MilterError:
            raise
        except ScannerError as err:
            raise MilterError(str(err)) from err
        return data[:1], data[1:]

    # -- negotiation ----------------------------------------------------------------------------
    async def negotiate(self) -> None:
        """Option negotiation: offer our version, actions and steps; take what the milter wants."""
        offered = PROTOCOL[self.offered_version]
        self.send(SMFIC_OPTNEG, struct.pack("!III", self.offered_version, ACTIONS, offered))
        command, data = await self.read()
        if command != SMFIC_OPTNEG or len(data) < 12:
            raise MilterError(f"unexpected answer {command!r} to option negotiation")
        version, actions, steps = struct.unpack("!III", data[:12])
        if version < 2 or version > self.offered_version:
            raise MilterError(f"milter speaks protocol version {version}; "
                              f"we speak 2 to {self.offered_version}")
        if actions & ~ACTIONS:
            raise MilterError(f"milter asks for actions {actions:#x} we do not know")
        self.version = version
        self.actions = actions
        # steps outside the milter's version do not exist for it
        self.steps = steps & PROTOCOL.get(version, PROTOCOL[6])
        rest = data[12:]
        while len(rest) >= 5:  # SMFIR_SETSYMLIST lists: the macros the milter wants per stage
            (stage,) = struct.unpack("!I", rest[:4])
            names, _, rest = rest[4:].partition(b"\0")
            self.macro_lists[stage] = names.decode("ascii", "replace")

    def wants(self, step: int) -> bool:
        """False when the milter asked not to get this step (an ``SMFIP_NO*`` bit)."""
        return not self.steps & step

    def answers(self, step: int) -> bool:
        """False when the milter will not reply to this step (an ``SMFIP_NR_*`` bit)."""
        return not self.steps & step

    # -- events ---------------------------------------------------------------------------------
    def macros(self, command: bytes, values: Mapping[str, str | None]) -> None:
        """Send the macros of the stage ``command`` starts (names without braces get them)."""
        pairs: list[str] = []
        for name, value in values.items():
            if value is None:
                continue
            pairs += [name if len(name) == 1 else "{" + name.strip("{}") + "}", value]
        if pairs:
            self.send(SMFIC_MACRO, command + strings(*pairs))

    async def event(self, command: bytes, data: bytes, skip: int, no_reply: int,
                    macros: Mapping[str, str | None] | None = None) -> Verdict:
        """Report one event; the milter's verdict (``continue`` when it does not want or answer it).

        Waits while the connection's buffer is full, so body chunks sent
        without replies (``SMFIP_NR_BODY``) never pile up in memory.
        """
        if command == SMFIC_DATA and self.version < 4:
            return Verdict("continue")  # no such event before version 4
        if macros:
            self.macros(command, macros)
        if not self.wants(skip):
            return Verdict("continue")
        await self.connection.send(packet(command, data))
        if no_reply and not self.answers(no_reply):
            return Verdict("continue")
        return await self.verdict(command)

    async def verdict(self, command: bytes, changes: Changes | None = None) -> Verdict:
        """Read replies up to the decision on ``command`` (end of message: collect ``changes``)."""
        while True:
            reply, data = await self.read()
            if changes is not None and reply != SMFIR_REPLBODY:
                changes.body_done()
            if reply == SMFIR_PROGRESS:
                continue
            if reply in _DECISIONS:
                if data:
                    raise MilterError(f"reply {reply!r} with unexpected data")
                action = _DECISIONS[reply]
                return Verdict(action, _DEFAULT_REPLIES.get(action))
            if reply == SMFIR_REPLYCODE:
                return self._reply_code(data)
            if reply == SMFIR_QUARANTINE:
                if changes is not None:
                    changes.quarantine = _split_strings(data, 1)[0].decode("utf-8", "replace") or "milter"
                continue
            if changes is None:
                raise MilterError(f"unexpected reply {reply!r} to {command!r}")
            self._change(reply, data, changes)

    @staticmethod
    def _reply_code(data: bytes) -> Verdict:
        text = data.rstrip(b"\0").decode("utf-8", "replace").replace("%%", "%")
        if len(text) < 4 or text[0] not in "45" or not text[:3].isdigit() or text[3] not in " -":
            raise MilterError(f"malformed SMFIR_REPLYCODE {text[:80]!r}")
        lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
        parser = ReplyParser()
        try:
            replies = parser.feed("".join(line + "\r\n" for line in lines).encode())
        except ReplyError as err:
            raise MilterError(f"malformed SMFIR_REPLYCODE {text[:80]!r}") from err
        if len(replies) != 1 or parser.pending:
            raise MilterError(f"malformed SMFIR_REPLYCODE {text[:80]!r}")
        reply = replies[0]
        if reply.enhanced is None:
            reply = reply._replace(enhanced=f"{text[0]}.7.1")
        return Verdict("reject" if reply.code >= 500 else "tempfail", reply)

    def _change(self, reply: bytes, data: bytes, changes: Changes) -> None:
        """Record one modification request."""
        if reply == SMFIR_ADDHEADER:
            name, value = _split_strings(data, 2)
            changes.headers.append(("add", 0, _text(name), self._value(value)))
        elif reply in (SMFIR_CHGHEADER, SMFIR_INSHEADER):
            if len(data) < 4:
                raise MilterError("header change without index")
            (index,) = struct.unpack("!I", data[:4])
            name, value = _split_strings(data[4:], 2)
            op = "change" if reply == SMFIR_CHGHEADER else "insert"
            changes.headers.append((op, max(1, index) if op == "change" else index, _text(name),
                                    self._value(value)))
        elif reply in (SMFIR_ADDRCPT, SMFIR_DELRCPT):
            recipient = _text(_split_strings(data, 1)[0])
            if reply == SMFIR_ADDRCPT:
                changes.add_recipients.append((recipient, ""))
            else:
                changes.delete_recipients.append(recipient)
        elif reply in (SMFIR_ADDRCPT_PAR, SMFIR_CHGFROM):
            parts = data.split(b"\0")
            path, arguments = _text(parts[0]), _text(parts[1]) if len(parts) > 2 else ""
            if reply == SMFIR_CHGFROM:
                changes.sender = (path, arguments)
            else:
                changes.add_recipients.append((path, arguments))
        elif reply == SMFIR_REPLBODY:
            changes.body_chunk(self.plugin, data)
        else:
            raise MilterError(f"unexpected reply {reply!r} at the end of the message")

    def _value(self, raw: bytes) -> str:
        value = raw.decode("utf-8", "replace")
        if self.steps & SMFIP_HDR_LEADSPC and value.startswith(" "):
            value = value[1:]
        return value

    # -- the message ----------------------------------------------------------------------------
    async def message(self, transaction: Transaction, macros: Mapping[str, str | None]) -> tuple[
            Verdict, Changes]:
        """Headers, end of headers, body and end of message; the verdict and the changes asked for."""
        changes = Changes()
        leading_space = bool(self.steps & SMFIP_HDR_LEADSPC)
        for name, raw in transaction.header.raw_items():
            value = raw.rstrip(b"\n")
            if not leading_space and value.startswith(b" "):
                value = value[1:]
            verdict = await self.event(SMFIC_HEADER, strings(name, value), SMFIP_NOHDRS, SMFIP_NR_HDR,
                                       macros)
            if verdict.action not in ("continue", "skip"):
                return verdict, changes
            macros = {}
        verdict = await self.event(SMFIC_EOH, b"", SMFIP_NOEOH, SMFIP_NR_EOH, macros)
        if verdict.action not in ("continue", "skip"):
            return verdict, changes
        if self.wants(SMFIP_NOBODY):
            chunks = message_chunks(self.plugin, transaction, BODY_CHUNK, crlf=True, header=False)
            try:
                async for chunk in chunks:
                    verdict = await self.event(SMFIC_BODY, chunk, SMFIP_NOBODY, SMFIP_NR_BODY)
                    if verdict.action == "skip":
                        break
                    if verdict.action != "continue":
                        return verdict, changes
            finally:
                await chunks.aclose()
        self.send(SMFIC_BODYEOB)
        try:
            verdict = await self.verdict(SMFIC_BODYEOB, changes)
        except BaseException:
            changes.discard_body()
            raise
        return verdict, changes

    # -- the end ----------------------------------------------------------------------------------
    def abort(self) -> None:
        """Forget the current message (RSET, a new MAIL, the end of a transaction)."""
        if not self.connection.lost:
            self.send(SMFIC_ABORT)

    def quit(self) -> None:
        """End the conversation and close."""
        if not self.connection.lost:
            self.send(SMFIC_QUIT)
            self.connection.transport.loseConnection()  # type: ignore[union-attr]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def mail_arguments(address: str, params: Mapping[str, Any]) -> bytes:
    """The data of SMFIC_MAIL / SMFIC_RCPT: the path, then ``KEY=VALUE`` ESMTP arguments."""
    words: list[str] = [address]
    for key, value in params.items():
        words.append(key.upper() if value is None else f"{key.upper()}={value}")
    return strings(*words)


def connect_data(hostname: str, ip: str, port: int) -> bytes:
    """The data of SMFIC_CONNECT: host name, family (``4``/``6``), port, address."""
    family = b"6" if ":" in ip else b"4"
    return strings(hostname) + family + struct.pack("!H", port) + strings(ip)


__all__ = ["ACTIONS", "BODY_CHUNK", "Changes", "MilterClient", "MilterError", "PROTOCOL", "Verdict",
           "connect_data", "mail_arguments", "packet", "strings"]
