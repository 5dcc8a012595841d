"""SMTP replies: the one :class:`Reply` type, its wire form, its parser, and the reply tables.

The tables are the reply contract with qpsmtpd (reference §3.2): for each hook,
how a :class:`~qptwisted.core.codes.Code` becomes an SMTP reply. Where qpsmtpd
sends nothing for a bare DENY we send the default text. A code missing from a
table means "the normal reply". Which codes also close the connection is a
fact of the hook (:attr:`qptwisted.core.hooks.HookSpec.closing`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from qptwisted.core.codes import (
    DENY,
    DENY_DISCONNECT,
    DENYSOFT,
    DENYSOFT_DISCONNECT,
    Code,
)


class Reply(NamedTuple):
    """One SMTP reply: code, RFC 3463 enhanced status code (or None), text.

    ``text`` separates the lines of a multi-line reply with ``\\n``. The same
    type describes what the server sends, what a reply table holds and what
    the SMTP client (and the test kit) reads back, so a reply compares equal
    to the tuple ``(250, "2.0.0", "OK")``.
    """

    code: int
    enhanced: str | None = None
    text: str = ""

    @property
    def lines(self) -> list[str]:
        """The text's lines."""
        return self.text.split("\n")

    @property
    def positive(self) -> bool:
        """2xx or 3xx."""
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        """4xx: try again later."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        """5xx."""
        return self.code >= 500

    def to_bytes(self) -> bytes:
        """The wire form (see :func:`format_reply`)."""
        return format_reply(self.code, self.text, self.enhanced)

    def __str__(self) -> str:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        return f"{self.code} {prefix}{' '.join(line for line in self.lines if line)}".rstrip()


ReplyTable = dict[Code, Reply]

PRE_CONNECTION: ReplyTable = {
    DENY: Reply(550, "5.7.1", "Sorry, service not available for you"),
    DENY_DISCONNECT: Reply(550, "5.7.1", "Sorry, service not available for you"),
    DENYSOFT: Reply(451, "4.7.1", "Sorry, try again later"),
    DENYSOFT_DISCONNECT: Reply(451, "4.7.1", "Sorry, try again later"),
}
CONNECT: ReplyTable = {
    DENY: Reply(550, "5.7.1", "Connection from you denied, bye bye."),
    DENY_DISCONNECT: Reply(550, "5.7.1", "Connection from you denied, bye bye."),
    DENYSOFT: Reply(450, "4.7.1", "Connection from you temporarily denied, bye bye."),
    DENYSOFT_DISCONNECT: Reply(450, "4.7.1", "Connection from you temporarily denied, bye bye."),
}
HELO: ReplyTable = {
    DENY: Reply(550, "5.7.1", "Sorry, your HELO is not acceptable"),
    DENYSOFT: Reply(450, "4.7.1", "Sorry, your HELO is temporarily not acceptable"),
    DENY_DISCONNECT: Reply(550, "5.7.1", "Sorry, your HELO is not acceptable"),
    DENYSOFT_DISCONNECT: Reply(450, "4.7.1", "Sorry, your HELO is temporarily not acceptable"),
}
MAIL: ReplyTable = {
    DENY: Reply(550, "5.7.1", "{addr}, denied"),
    DENYSOFT: Reply(450, "4.7.1", "{addr}, temporarily denied"),
    DENY_DISCONNECT: Reply(550, "5.7.1", "{addr}, denied"),
    DENYSOFT_DISCONNECT: Reply(421, "4.7.1", "{addr}, temporarily denied"),
}
RCPT: ReplyTable = {
    DENY: Reply(550, "5.7.1", "relaying denied"),
    DENYSOFT: Reply(450, "4.7.1", "relaying denied"),
    DENY_DISCONNECT: Reply(550, "5.7.1", "delivery denied"),
    DENYSOFT_DISCONNECT: Reply(421, "4.7.1", "relaying denied"),
}
RCPT_DECLINED = Reply(450, "4.7.1", "No plugin decided if relaying is allowed")
DATA: ReplyTable = {
    DENY: Reply(554, "5.7.1", "Message denied"),
    DENYSOFT: Reply(451, "4.7.1", "Message denied temporarily"),
    DENY_DISCONNECT: Reply(554, "5.7.1", "Message denied"),
    DENYSOFT_DISCONNECT: Reply(421, "4.7.1", "Message denied temporarily"),
}
DATA_HEADERS_END: ReplyTable = {
    DENY_DISCONNECT: Reply(554, "5.7.1", "Message denied"),
    DENYSOFT_DISCONNECT: Reply(421, "4.7.1", "Message denied temporarily"),
}
DATA_POST: ReplyTable = {
    DENY: Reply(552, "5.7.1", "Message denied"),
    DENYSOFT: Reply(452, "4.7.1", "Message denied temporarily"),
    DENY_DISCONNECT: Reply(552, "5.7.1", "Message denied"),
    DENYSOFT_DISCONNECT: Reply(452, "4.7.1", "Message denied temporarily"),
}
QUEUE: ReplyTable = {
    DENY: Reply(552, "5.7.1", "Message denied"),
    DENYSOFT: Reply(452, "4.3.0", "Message denied temporarily"),
    DENY_DISCONNECT: Reply(451, "4.3.0", "Queuing declined or disabled; try again later"),
    DENYSOFT_DISCONNECT: Reply(451, "4.3.0", "Queuing declined or disabled; try again later"),
}
QUEUE_DECLINED = Reply(451, "4.3.0", "Queuing declined or disabled; try again later")
VRFY: ReplyTable = {
    DENY: Reply(554, "5.7.1", "Access Denied"),
}
NOOP: ReplyTable = {
    DENY: Reply(500, "5.5.1", "Stop wasting my time."),
    DENY_DISCONNECT: Reply(500, "5.5.1", "Stop wasting my time."),
}
HELP: ReplyTable = {
    DENY: Reply(500, "5.5.1", "Syntax error, command not recognized"),
}
UNRECOGNIZED: ReplyTable = {
    DENY: Reply(500, "5.5.1", "Unrecognized command"),
    DENY_DISCONNECT: Reply(521, "5.5.1", "Unrecognized command"),
}
#: the reply to a command whose hook chain broke (a plugin raised or answered nonsense): fail closed
FAULT = Reply(451, "4.3.0", "Temporary failure while checking your mail, try again later")

_ENHANCED_PREFIX = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?= |$)")
_QPSMTPD_DSN = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)")
_ENHANCED_TEXT = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?: |$)")

_FORMATTED: dict[tuple[int, str, str | None], bytes] = {}  # the first replies seen; bounded, no eviction


def format_reply(code: int, message: str, enhanced: str | None) -> bytes:
    """The wire form of a reply: ``NNN-`` continuation lines, CRLF after each.

    ``enhanced`` (RFC 3463) is put before each line unless the message already
    starts with one; a qpsmtpd-style ``(#5.7.1)`` in the text is used as the
    code. ``None`` sends no enhanced code (greeting, HELO/EHLO, 3xx).
    """
    key = (code, message, enhanced)
    cached = _FORMATTED.get(key)
    if cached is None:
        cached = _format_reply(code, message, enhanced)
        if len(_FORMATTED) < 512:
            _FORMATTED[key] = cached
    return cached


def _format_reply(code: int, message: str, enhanced: str | None) -> bytes:
    if "\r" in message or message.endswith("\n"):
        # no bare CR on the wire; a trailing newline adds no empty line (Perl's split)
        message = message.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
    lines = message.split("\n") if "\n" in message else [message]
    if enhanced is not None:
        if _ENHANCED_PREFIX.match(lines[0]):
            enhanced = None
        else:
            found = _QPSMTPD_DSN.search(message)
            if found is not None:
                enhanced = str(code)[0] + found.group(1)[1:]
            elif enhanced[0] != str(code)[0]:
                enhanced = str(code)[0] + enhanced[1:]
    prefix = f"{enhanced} " if enhanced else ""
    last = len(lines) - 1
    return "".join(
        f"{code}{' ' if index == last else '-'}{prefix}{line}\r\n" for index, line in enumerate(lines)
    ).encode("utf-8", "replace")


class ReplyError(ValueError):
    """Bytes that are not a well-formed SMTP reply."""


class ReplyParser:
    """Turns the bytes of a reply stream into :class:`Reply` values, incrementally.

    The enhanced status code of the first line is taken apart from the text
    (and from every continuation line that repeats it). ``strict`` also
    insists on what our own server promises: CRLF after every line, and one
    enhanced code for all lines of a reply.
    """

    def __init__(self, strict: bool = False, max_line: int = 65536) -> None:
        self.strict = strict
        self.max_line = max_line
        self._buffer = b""
        self._lines: list[str] = []
        self._enhanced: str | None = None

    def feed(self, data: bytes) -> list[Reply]:
        """Take bytes; return the replies they completed."""
        buffer = self._buffer + data if self._buffer else data
        out: list[Reply] = []
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            raw = buffer[start:end]
            start = end + 1
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            elif self.strict:
                raise ReplyError(f"reply line does not end in CRLF: {raw!r}")
            reply = self._line(raw.decode("utf-8", "replace"))
            if reply is not None:
                out.append(reply)
        self._buffer = buffer[start:]
        if len(self._buffer) > self.max_line:
            raise ReplyError("reply line too long")
        return out

    @property
    def pending(self) -> bool:
        """True while a reply has begun and not ended."""
        return bool(self._buffer or self._lines)

    def _line(self, line: str) -> Reply | None:
        code, separator, text = line[:3], line[3:4], line[4:]
        if not code.isdigit() or separator not in ("", " ", "-"):
            raise ReplyError(f"bad reply line {line[:80]!r}")
        if self.strict and "\r" in line:
            raise ReplyError(f"bare CR in reply line {line!r}")
        match = _ENHANCED_TEXT.match(text) if code[0] in "245" else None
        found = match.group(1) if match else None
        if not self._lines:
            self._enhanced = found
            if match:
                text = text[match.end():]
        elif match and found == self._enhanced:
            text = text[match.end():]
        elif self.strict and (found or self._enhanced):
            raise ReplyError(f"enhanced code changed inside a multi-line reply at {line!r}")
        self._lines.append(text)
        if separator == "-":
            return None
        reply = Reply(int(code), self._enhanced, "\n".join(self._lines))
        self._lines, self._enhanced = [], None
        return reply


def parse_replies(raw: bytes, strict: bool = True) -> list[Reply]:
    """Every reply in ``raw`` (which must end with a complete reply)."""
    parser = ReplyParser(strict)
    replies = parser.feed(raw)
    if parser.pending:
        raise ReplyError(f"unterminated reply: {raw!r}")
    return replies
