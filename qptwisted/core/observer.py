"""The one optional observer the engine reports to: hook answers, sessions, DNS lookups, scans.

Metrics and the live web view are built on it; nothing else in the engine
knows they exist. An engine's observer is ``None`` unless the service sets
one (``--metrics``, ``--web``), and every place that reports checks that
first, so an engine without an observer pays one attribute test per report.

Reports arrive on the reactor thread, in the order things happen:

- :meth:`Observer.hook_answered` after each plugin answered one hook (or
  broke, or timed out): its :class:`~qptwisted.core.codes.Code` and the
  seconds it took, an asynchronous wait included;
- :meth:`Observer.connection_opened`, :meth:`Observer.message_received`,
  :meth:`Observer.transaction_ended` and :meth:`Observer.connection_closed`
  from the session (the argument is the :class:`~qptwisted.smtp.session.Session`,
  typed loosely here because the engine sits below it);
- :meth:`Observer.dns_answered` after each lookup of the engine's resolver;
- :meth:`Observer.scanned` when a content scanner reports (:func:`report_scan`).

An observer must not raise and must be quick: it runs inside the mail path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from qptwisted.core.codes import Code

#: what the web view and the metrics call each code: the verdict classes of a plugin answer
VERDICTS: dict[Code, str] = {
    Code.OK: "accept", Code.DONE: "accept", Code.DECLINED: "skip",
    Code.DENY: "refuse", Code.DENY_DISCONNECT: "refuse",
    Code.DENYSOFT: "defer", Code.DENYSOFT_DISCONNECT: "defer",
}

#: hooks whose refusals refuse (part of) a mail transaction; the others act on the whole connection
TRANSACTION_HOOKS = frozenset({"mail_pre", "mail", "rcpt_pre", "rcpt", "data", "data_headers_end",
                               "data_post", "queue_pre", "queue"})

#: scan results a scanner may report (anything else is counted as ``other``)
SCAN_RESULTS = frozenset({"clean", "infected", "spam", "ham", "suspicious", "skipped", "error"})


class Observer(Protocol):
    """What an engine reports to (see the module documentation)."""

    def hook_answered(self, transaction: Any, plugin: str, hook: str, code: Code, seconds: float) -> None:
        """``plugin`` answered ``hook`` with ``code`` after ``seconds``."""

    def connection_opened(self, session: Any) -> None:
        """A connection was accepted and its session made (before any hook ran)."""

    def message_received(self, session: Any) -> None:
        """The message of the current transaction arrived whole; its answer follows."""

    def transaction_ended(self, session: Any, transaction: Any) -> None:
        """``transaction`` ended; ``session.last_reply`` is the code of the last reply sent."""

    def connection_closed(self, session: Any) -> None:
        """The connection is gone and its end-of-connection hooks have run."""

    def dns_answered(self, kind: str, outcome: str, seconds: float) -> None:
        """A lookup of type ``kind`` ended: ``ok``, ``empty`` (NXDOMAIN, no data), ``timeout``, ``error``."""

    def scanned(self, scanner: str, result: str, seconds: float) -> None:
        """A content scanner judged a message (``result`` is one of :data:`SCAN_RESULTS`)."""


class Observers:
    """Several observers as one (metrics and the web view together)."""

    def __init__(self, observers: Iterable[Observer]) -> None:
        self.observers = tuple(observers)

    def hook_answered(self, transaction: Any, plugin: str, hook: str, code: Code, seconds: float) -> None:
        """Tell every observer."""
        for observer in self.observers:
            observer.hook_answered(transaction, plugin, hook, code, seconds)

    def connection_opened(self, session: Any) -> None:
        """Tell every observer."""
        for observer in self.observers:
            observer.connection_opened(session)

    def message_received(self, session: Any) -> None:
        """Tell every observer."""
        for observer in self.observers:
            observer.message_received(session)

    def transaction_ended(self, session: Any, transaction: Any) -> None:
        """Tell every observer."""
        for observer in self.observers:
            observer.transaction_ended(session, transaction)

    def connection_closed(self, session: Any) -> None:
        """Tell every observer."""
        for observer in self.observers:
            observer.connection_closed(session)

    def dns_answered(self, kind: str, outcome: str, seconds: float) -> None:
        """Tell every observer."""
        for observer in self.observers:
            observer.dns_answered(kind, outcome, seconds)

    def scanned(self, scanner: str, result: str, seconds: float) -> None:
        """Tell every observer."""
        for observer in self.observers:
            observer.scanned(scanner, result, seconds)


def reply_result(code: int) -> str:
    """How the answer ``code`` to a message ended it: ``accepted``, ``deferred``, ``refused``, ``abandoned``.

    ``abandoned`` is anything but a final answer (the client left before it).
    """
    if 200 <= code < 300:
        return "accepted"
    if 400 <= code < 600:
        return "deferred" if code < 500 else "refused"
    return "abandoned"


def combine(observers: Iterable[Observer | None]) -> Observer | None:
    """One observer for all that are not None: None, the only one, or an :class:`Observers`."""
    present = [observer for observer in observers if observer is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else Observers(present)


def report_scan(engine: Any, scanner: str, result: str, seconds: float = 0.0) -> None:
    """For scanner plugins: count one scan (``clean``, ``infected``, ``spam``, ``error`` ...).

    A no-op unless the engine has an observer; ``result`` outside
    :data:`SCAN_RESULTS` is reported as ``other``, so labels stay bounded.
    """
    observer = getattr(engine, "observer", None)
    if observer is not None:
        observer.scanned(scanner, result if result in SCAN_RESULTS else "other", seconds)


__all__ = ["Observer", "Observers", "VERDICTS", "SCAN_RESULTS", "TRANSACTION_HOOKS", "combine",
           "reply_result", "report_scan"]
