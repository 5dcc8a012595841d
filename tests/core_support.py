"""Shared helpers for the engine's core tests: a dialogue that leaves the clock alone, and a capture queue."""

from __future__ import annotations

from typing import Any

from qptwisted.testing import CaptureQueue as KitCaptureQueue
from qptwisted.testing import SMTPDialogue


class Dialogue(SMTPDialogue):
    """An :class:`SMTPDialogue` for tests of timing: the clock moves only when the test moves it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("advance", False)
        super().__init__(*args, **kwargs)


class CaptureQueue(KitCaptureQueue):
    """The kit's capture queue, with the envelopes as plain tuples."""

    name = "test_capture_queue"

    @property
    def envelopes(self) -> list[tuple[str, list[str]]]:
        return [(delivered.sender, delivered.recipients) for delivered in self.delivered]
