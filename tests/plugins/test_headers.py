"""headers: required headers, singular duplicates, Date window (upstream decision table)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.plugins.policy_support import MESSAGE, codes, dialogue

DAY = 86400
NOW = 1_000_000_000  # Sun, 09 Sep 2001 01:46:40 +0000


def message(date: str | None = "Sun, 09 Sep 2001 01:46:40 +0000", extra: str = "", drop: str = "") -> str:
    lines = [line for line in MESSAGE.split("\n") if not line.startswith(("Date:", drop or "\0"))]
    if date is not None:
        lines.insert(0, f"Date: {date}")
    return extra + "\n".join(lines)


class HeadersTests(unittest.TestCase):
    def deliver(self, line: str, data: str) -> tuple:
        clock = Clock()
        clock.advance(NOW)
        smtp = dialogue([line], clock=clock)
        return smtp.deliver("<a@example.org>", ["<bob@example.com>"], data)[-1]

    def test_required(self) -> None:
        self.assertEqual(
            self.deliver("headers", message(None)), (552, "5.7.1", "We require a valid Date header")
        )
        self.assertEqual(
            self.deliver("headers", message(drop="From:")), (552, "5.7.1", "We require a valid From header")
        )
        self.assertEqual(self.deliver("headers reject_type temp", message(None))[0], 452)
        self.assertEqual(self.deliver("headers require Subject", message(None))[0], 250)
        self.assertEqual(
            self.deliver("headers require Subject,X-Needed", message())[2],
            "We require a valid X-Needed header",
        )
        self.assertEqual(self.deliver("headers reject 0", message(None))[0], 250)

    def test_singular(self) -> None:
        self.assertEqual(
            self.deliver("headers", message(extra="Subject: again\n")),
            (552, "5.7.1", "Only one Subject header allowed. See RFC 5322, Section 3.6"),
        )
        self.assertEqual(self.deliver("headers", message(extra="Received: a\nReceived: b\n"))[0], 250)

    def test_date_window(self) -> None:
        future = "Mon, 17 Sep 2001 01:46:40 +0000"
        past = "Sun, 01 Jan 2001 00:00:00 +0000"
        self.assertEqual(
            self.deliver("headers future 2", message(future))[2], "The Date header is too far in the future"
        )
        self.assertEqual(self.deliver("headers future 10", message(future))[0], 250)
        self.assertEqual(
            self.deliver("headers past 15", message(past))[2], "The Date header is too far in the past"
        )
        self.assertEqual(self.deliver("headers past 365", message(past))[0], 250)
        self.assertEqual(self.deliver("headers past 1", message("yesterday-ish"))[2], "invalid date header")
        self.assertEqual(self.deliver("headers", message("yesterday-ish"))[0], 250)

    def test_relay_clients_are_immune(self) -> None:
        smtp = dialogue(["relay", "headers"], {"relayclients": ["192.0.2.1"]})
        self.assertEqual(
            codes(smtp.deliver("<a@example.org>", ["<x@elsewhere.test>"], message(None)))[-1], 250
        )
