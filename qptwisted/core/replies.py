"""The reply contract: how each hook's answer becomes an SMTP reply.

Each table maps a :class:`~qptwisted.core.codes.Code` to ``(smtp code, enhanced
status code, default text, close)``. The texts and codes are qpsmtpd's
(reference §3.2); where qpsmtpd sends nothing for a bare DENY we send the
default text. A code missing from a table means "the normal reply".
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
    """An SMTP reply the engine sends for a hook answer."""

    code: int
    enhanced: str
    text: str
    close: bool = False


ReplyTable = dict[Code, Reply]

PRE_CONNECTION: ReplyTable = {
    DENY: Reply(550, "5.7.1", "Sorry, service not available for you", True),
    DENY_DISCONNECT: Reply(550, "5.7.1", "Sorry, service not available for you", True),
    DENYSOFT: Reply(451, "4.7.1", "Sorry, try again later", True),
    DENYSOFT_DISCONNECT: Reply(451, "4.7.1", "Sorry, try again later", True),
}
CONNECT: ReplyTable = {
    DENY: Reply(550, "5.7.1", "Connection from you denied, bye bye.", True),
    DENY_DISCONNECT: Reply(550, "5.7.1", "Connection from you denied, bye bye.", True),
    DENYSOFT: Reply(450, "4.7.1", "Connection from you temporarily denied, bye bye.", True),
    DENYSOFT_DISCONNECT: Reply(450, "4.7.1", "Connection from you temporarily denied, bye bye.", True),
}
HELO: ReplyTable = {
    DENY: Reply(550, "5.7.1", "Sorry, your HELO is not acceptable"),
    DENYSOFT: Reply(450, "4.7.1", "Sorry, your HELO is temporarily not acceptable"),
    DENY_DISCONNECT: Reply(550, "5.7.1", "Sorry, your HELO is not acceptable", True),
    DENYSOFT_DISCONNECT: Reply(450, "4.7.1", "Sorry, your HELO is temporarily not acceptable", True),
}
MAIL: ReplyTable = {
    DENY: Reply(550, "5.7.1", "{addr}, denied"),
    DENYSOFT: Reply(450, "4.7.1", "{addr}, temporarily denied"),
    DENY_DISCONNECT: Reply(550, "5.7.1", "{addr}, denied", True),
    DENYSOFT_DISCONNECT: Reply(421, "4.7.1", "{addr}, temporarily denied", True),
}
RCPT: ReplyTable = {
    DENY: Reply(550, "5.7.1", "relaying denied"),
    DENYSOFT: Reply(450, "4.7.1", "relaying denied"),
    DENY_DISCONNECT: Reply(550, "5.7.1", "delivery denied", True),
    DENYSOFT_DISCONNECT: Reply(421, "4.7.1", "relaying denied", True),
}
RCPT_DECLINED = Reply(450, "4.7.1", "No plugin decided if relaying is allowed")
DATA: ReplyTable = {
    DENY: Reply(554, "5.7.1", "Message denied"),
    DENYSOFT: Reply(451, "4.7.1", "Message denied temporarily"),
    DENY_DISCONNECT: Reply(554, "5.7.1", "Message denied", True),
    DENYSOFT_DISCONNECT: Reply(421, "4.7.1", "Message denied temporarily", True),
}
DATA_HEADERS_END: ReplyTable = {
    DENY_DISCONNECT: Reply(554, "5.7.1", "Message denied", True),
    DENYSOFT_DISCONNECT: Reply(421, "4.7.1", "Message denied temporarily", True),
}
DATA_POST: ReplyTable = {
    DENY: Reply(552, "5.7.1", "Message denied"),
    DENYSOFT: Reply(452, "4.7.1", "Message denied temporarily"),
    DENY_DISCONNECT: Reply(552, "5.7.1", "Message denied", True),
    DENYSOFT_DISCONNECT: Reply(452, "4.7.1", "Message denied temporarily", True),
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
    DENY_DISCONNECT: Reply(500, "5.5.1", "Stop wasting my time.", True),
}
HELP: ReplyTable = {
    DENY: Reply(500, "5.5.1", "Syntax error, command not recognized"),
}
UNRECOGNIZED: ReplyTable = {
    DENY: Reply(500, "5.5.1", "Unrecognized command"),
    DENY_DISCONNECT: Reply(521, "5.5.1", "Unrecognized command", True),
}

_ENHANCED_PREFIX = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?= |$)")
_QPSMTPD_DSN = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)")


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
