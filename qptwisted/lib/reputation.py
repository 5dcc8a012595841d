"""The records that ``karma`` and ``greylisting`` keep in their stores, shared with the inspection tools.

``qpsmtpd karma ...`` and ``qpsmtpd greylist ...`` (``qptwisted.service.tools``)
read and edit the same stores as the plugins, so the formats live here, once.
"""

from __future__ import annotations

from dataclasses import dataclass

#: how long karma history is kept without new connections
KARMA_TTL = 365 * 86400.0
#: the greylisting store key of a client whitelisted by hand (``qpsmtpd greylist whitelist IP``)
CLIENT_PREFIX = "client:"


class History:
    """One IP's karma record, stored as ``penalty_start:naughty:nice:connects``."""

    __slots__ = ("penalty_start", "naughty", "nice", "connects")

    def __init__(self, value: str | None = None) -> None:
        parts = (value or "0:0:0:0").split(":")
        self.penalty_start = float(parts[0])
        self.naughty, self.nice, self.connects = (int(p) for p in parts[1:4])

    @property
    def score(self) -> int:
        """nice - naughty."""
        return self.nice - self.naughty

    def __str__(self) -> str:
        return f"{self.penalty_start}:{self.naughty}:{self.nice}:{self.connects}"


@dataclass
class GreyRecord:
    """One greylisting triplet: ``first:blocked:passed`` and, after ``|``, what the triplet was."""

    first: float
    blocked: int
    passed: int
    label: str = ""

    @classmethod
    def parse(cls, value: str) -> GreyRecord:
        """Read a stored value (records written before the label was kept have none)."""
        counts, _, label = value.partition("|")
        first, blocked, passed = counts.split(":")
        return cls(float(first), int(blocked), int(passed), label)

    def __str__(self) -> str:
        text = f"{self.first}:{self.blocked}:{self.passed}"
        return f"{text}|{self.label}" if self.label else text


__all__ = ["CLIENT_PREFIX", "GreyRecord", "History", "KARMA_TTL"]
