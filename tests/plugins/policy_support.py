"""Helpers for the policy plugin tests: an engine with a capture queue, dialogues, messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from qptwisted.core.engine import Engine
from qptwisted.core.plugin import Plugin
from qptwisted.testing import PluginSpec, make_engine
from tests.core_support import CaptureQueue, Dialogue

MESSAGE = (
    "From: Alice <alice@example.org>\n"
    "To: Bob <bob@example.com>\n"
    "Date: Thu, 01 Jan 1970 00:00:00 +0000\n"
    "Message-Id: <1@example.org>\n"
    "Subject: lunch\n"
    "\n"
    "Shall we?\n"
)


def engine(plugins: Iterable[PluginSpec], config: Mapping[str, Any] | None = None,
           queue: bool = True, clock: Any = None) -> Engine:
    """An engine with ``plugins``, ``rcpt_ok`` for example.com and a capture queue last."""
    settings: dict[str, Any] = {"rcpthosts": ["example.com", "example.net"]}
    settings.update(config or {})
    specs: list[PluginSpec] = [*plugins, "rcpt_ok"]
    if queue:
        specs.append(CaptureQueue)
    return make_engine(specs, settings, clock=clock)


def dialogue(plugins: Iterable[PluginSpec], config: Mapping[str, Any] | None = None,
             remote_ip: str = "192.0.2.1", clock: Any = None) -> Dialogue:
    """A :class:`Dialogue` against :func:`engine`."""
    return Dialogue(engine(plugins, config, clock=clock), remote_ip=remote_ip)


def plugin(engine: Engine, name: str) -> Any:
    """The loaded plugin instance called ``name``."""
    for instance in engine.plugins:
        if instance.plugin_name == name:
            return instance
    raise LookupError(name)


def queued(engine: Engine) -> list[bytes]:
    """Messages the capture queue stored."""
    capture: Plugin = plugin(engine, "test_capture_queue")
    return capture.messages  # type: ignore[attr-defined, no-any-return]


def advance(where: Any, seconds: float) -> None:
    """Move the test clock of an engine or dialogue forward."""
    engine = getattr(where, "engine", where)
    engine.clock.advance(seconds)


def codes(replies: Iterable[tuple[Any, ...]]) -> list[int]:
    """Just the reply codes."""
    return [reply[0] for reply in replies]


class FakeResolver:
    """A synchronous stand-in for :class:`qptwisted.lib.dns.Resolver` (no network)."""

    def __init__(self, forward: Mapping[str, list[str]] | None = None,
                 reverse: Mapping[str, list[str]] | None = None, broken: Iterable[str] = ()) -> None:
        self.forward = dict(forward or {})
        self.reverse = dict(reverse or {})
        self.broken = set(broken)

    def _answer(self, table: Mapping[str, list[str]], key: str) -> Any:
        from twisted.internet.defer import fail, succeed

        from qptwisted.lib.dns import DNSServerFailure

        if key in self.broken:
            return fail(DNSServerFailure(f"DNS lookup of {key} failed: SERVFAIL"))
        return succeed(list(table.get(key, [])))

    def lookup_ip(self, name: str, timeout: float | None = None) -> Any:
        """Addresses of ``name``."""
        return self._answer(self.forward, name.lower().rstrip("."))

    def lookup_ptr(self, ip: str, timeout: float | None = None) -> Any:
        """Names of ``ip``."""
        return self._answer(self.reverse, ip)
