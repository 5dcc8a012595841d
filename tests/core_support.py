"""Shared helpers for the engine's core tests: a raw-reply dialogue and a capture queue."""

from __future__ import annotations

import re
from typing import Any

from qptwisted import OK, HookAnswer, Plugin, Transaction
from qptwisted.testing import SMTPDialogue

_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3}) ")

Reply = tuple[int, str | None, str]


def parse_replies(raw: bytes) -> list[Reply]:
    """Split wire bytes into ``(code, enhanced status or None, text)`` replies.

    Every line must end in CRLF (our fix of qpsmtpd's bare-LF 421) and every
    continuation line must carry the same code and enhanced status code.
    """
    if raw and not raw.endswith(b"\r\n"):
        raise AssertionError(f"reply does not end in CRLF: {raw!r}")
    result: list[Reply] = []
    lines: list[str] = []
    enhanced: str | None = None
    for line in raw.decode("utf-8").split("\r\n")[:-1] if raw else []:
        if "\n" in line or "\r" in line:
            raise AssertionError(f"bare CR or LF in reply line {line!r}")
        code, separator, text = line[:3], line[3:4], line[4:]
        match = _ENHANCED.match(text)
        this = match.group(1) if match else None
        if match:
            text = text[match.end():]
        if lines and this != enhanced:
            raise AssertionError(f"enhanced code changed inside a multi-line reply: {raw!r}")
        enhanced = this
        lines.append(text)
        if separator == " ":
            result.append((int(code), enhanced, "\n".join(lines)))
            lines, enhanced = [], None
        elif separator != "-":
            raise AssertionError(f"malformed reply line {line!r}")
    if lines:
        raise AssertionError(f"unterminated multi-line reply: {raw!r}")
    return result


class Dialogue(SMTPDialogue):
    """An :class:`SMTPDialogue` whose replies keep the enhanced status code apart."""

    greeting: list[Any]

    def replies(self) -> list[Any]:
        raw = self.transport.value()
        self.transport.clear()
        return parse_replies(raw)

    def send_raw(self, data: bytes) -> list[Any]:
        return super().send_raw(data)

    def send(self, *lines: str) -> list[Any]:
        return super().send(*lines)

    def message(self, data: bytes | str) -> list[Any]:
        return super().message(data)


class CaptureQueue(Plugin):
    """A queue plugin that keeps each stored message (bytes) in ``messages``."""

    name = "test_capture_queue"

    def register(self, *args: str) -> None:
        self.messages: list[bytes] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        self.messages.append(transaction.message_bytes())
        self.envelopes.append((str(transaction.sender), [str(r) for r in transaction.recipients]))
        return OK, "Queued"
