"""What the web view shows: the live sessions, the last transactions, per-second figures.

:class:`Activity` is an engine observer. It keeps, for each open connection,
the verdict of every plugin (per connection for the hooks before MAIL, per
transaction after), turns each ended transaction into a row, and once a
``tick`` (one second) sends one event to each subscriber (a browser on the
server-sent events stream): the rows that ended since the last tick, the
live sessions as they are now, the messages and refusals of that second.
The work is bounded by the tick, not by the mail rate: at 3,000 messages a
second a browser still gets one event a second with at most ``keep`` rows.

A row is a plain ``dict`` ready for JSON::

    {"id": "17.3", "time": 1767322800.5, "state": "accepted", "reply": 250,
     "ip": "192.0.2.1", "name": "mx.example.org", "helo": "mx.example.org",
     "sender": "a@example.org", "recipients": ["b@example.net"], "more": 0,
     "tls": "TLSv1.3", "auth": "", "size": 2048, "by": "queue/maildir",
     "verdicts": {"dnsbl": {"v": "skip", "hooks": "connect:declined"}, ...}}
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from qptwisted.core.codes import Code
from qptwisted.core.observer import TRANSACTION_HOOKS, VERDICTS, reply_result

#: hooks that only observe (their answers mean nothing): no cell shows them
QUIET_HOOKS = frozenset({"reset_transaction", "disconnect", "post_connection", "queue_post",
                         "data_post_headers", "received_line"})
_RANK = {"skip": 0, "accept": 1, "defer": 2, "refuse": 3}
_MAX_HOOKS = 8  # per cell: which hooks answered how (a tooltip), bounded
_MAX_RECIPIENTS = 10


class _Cells:
    """The verdicts of the plugins in one scope (a connection before MAIL, or one transaction)."""

    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells: dict[str, list[Any]] = {}

    def add(self, plugin: str, hook: str, code: Code) -> None:
        verdict = VERDICTS[code]
        cell = self.cells.get(plugin)
        if cell is None:
            self.cells[plugin] = [verdict, [f"{hook}:{code.name.lower()}"]]
            return
        if _RANK[verdict] > _RANK[cell[0]]:
            cell[0] = verdict
        if len(cell[1]) < _MAX_HOOKS:
            cell[1].append(f"{hook}:{code.name.lower()}")

    def merged(self, other: _Cells | None = None) -> dict[str, dict[str, str]]:
        """``{plugin: {"v": verdict, "hooks": "hook:code ..."}}`` of this scope (and ``other``)."""
        result = {plugin: {"v": cell[0], "hooks": " ".join(cell[1])} for plugin, cell in self.cells.items()}
        if other is not None:
            for plugin, cell in other.cells.items():
                mine = result.get(plugin)
                if mine is None or _RANK[cell[0]] > _RANK[mine["v"]]:
                    hooks = (mine["hooks"] + " " if mine else "") + " ".join(cell[1])
                    result[plugin] = {"v": cell[0], "hooks": hooks}
                else:
                    mine["hooks"] += " " + " ".join(cell[1])
        return result


class _Live:
    """One open connection."""

    __slots__ = ("session", "connection_cells", "transaction_cells", "message", "decider", "rows",
                 "refusal", "started")

    def __init__(self, session: Any, started: float) -> None:
        self.session = session
        self.connection_cells = _Cells()
        self.transaction_cells = _Cells()
        self.message = False
        self.decider = ""
        self.refusal: tuple[str, bool] | None = None  # (plugin, soft) of the last refusal
        self.rows = 0
        self.started = started


class Subscriber:
    """Someone who wants the events (the server-sent events stream of a browser)."""

    def send(self, event: str, data: str) -> bool:
        """Deliver one event; False when the subscriber could not take it (it gets a full state later)."""
        raise NotImplementedError


class Activity:
    """Keeps the live sessions and the last ``keep`` transactions; ticks events to subscribers."""

    def __init__(self, clock: IReactorTime, keep: int = 100, history: int = 120, tick: float = 1.0,
                 live_max: int = 200) -> None:
        self.clock = clock
        self.keep = keep
        self.live_max = live_max
        self.tick_seconds = tick
        self.rows: deque[dict[str, Any]] = deque(maxlen=keep)
        self.ticks: deque[dict[str, Any]] = deque(maxlen=history)
        self.plugins: list[str] = []
        self.subscribers: set[Subscriber] = set()
        self.stale: set[Subscriber] = set()
        self._live: dict[Any, _Live] = {}
        self._new: list[dict[str, Any]] = []
        self._messages: Counter[str] = Counter()
        self._refusals: Counter[str] = Counter()
        self._engine: Any = None
        self._loop: LoopingCall | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Tick every ``tick`` seconds."""
        if self._loop is None:
            self._loop = LoopingCall(self.tick)
            self._loop.clock = self.clock
            self._loop.start(self.tick_seconds, now=False)

    def stop(self) -> None:
        """Stop ticking."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    # -- the observer --------------------------------------------------------------
    def hook_answered(self, transaction: Any, plugin: str, hook: str, code: Code, seconds: float) -> None:
        """Colour the plugin's cell for this connection or transaction."""
        if transaction is None or hook in QUIET_HOOKS:
            return
        live = self._live.get(transaction.connection)
        if live is None:
            return
        if hook in TRANSACTION_HOOKS:
            live.transaction_cells.add(plugin, hook, code)
            if code is not Code.DECLINED:
                if live.message:
                    live.decider = plugin
                if VERDICTS[code] in ("refuse", "defer"):
                    live.refusal = (plugin, VERDICTS[code] == "defer")
        else:
            live.connection_cells.add(plugin, hook, code)
        if VERDICTS[code] in ("refuse", "defer"):
            self._refusals[plugin] += 1

    def connection_opened(self, session: Any) -> None:
        """A new live session; the chain's plugins are the columns."""
        self._live[session.connection] = _Live(session, self.clock.seconds())
        engine = session.engine
        if engine is not self._engine:
            self._engine = engine
            self.plugins = [plugin.plugin_name for plugin in engine.plugins
                            if not plugin.plugin_name.startswith("logging/")]

    def message_received(self, session: Any) -> None:
        """The plugin that answers from now on decides the message."""
        live = self._live.get(session.connection)
        if live is not None:
            live.message, live.decider = True, ""

    def transaction_ended(self, session: Any, transaction: Any) -> None:
        """Turn the transaction into a row (if it got as far as MAIL)."""
        live = self._live.get(session.connection)
        if live is None:
            return
        reply = 0
        if live.message:
            reply = session.last_reply
            state = reply_result(reply)
            self._messages[state] += 1
            by = live.decider
        elif live.refusal is not None:
            by, soft = live.refusal
            state = "deferred" if soft else "refused"
        elif transaction.sender is not None:
            state, by = "abandoned", ""
        else:
            state = ""
        if state:
            self._add(self.row(session, transaction, live, state, by, reply))
            live.rows += 1
        live.transaction_cells = _Cells()
        live.message, live.decider, live.refusal = False, "", None

    def connection_closed(self, session: Any) -> None:
        """The session is gone; one that never reached MAIL still leaves a row."""
        live = self._live.pop(session.connection, None)
        if live is not None and not live.rows:
            refused = any(cell[0] in ("refuse", "defer") for cell in live.connection_cells.cells.values())
            self._add(self.row(session, session.transaction, live, "refused" if refused else "closed", ""))

    def dns_answered(self, kind: str, outcome: str, seconds: float) -> None:
        """Not shown."""

    def scanned(self, scanner: str, result: str, seconds: float) -> None:
        """Not shown."""

    # -- rows and events -------------------------------------------------------------
    def row(self, session: Any, transaction: Any, live: _Live, state: str, by: str,
            reply: int = 0) -> dict[str, Any]:
        """The row of a transaction (or of a live session, with ``state="open"``).

        ``reply`` is the answer to its message (0 when none came).
        """
        connection = session.connection
        recipients = [str(rcpt) for rcpt in transaction.recipients]
        tls = connection.tls
        return {
            "id": f"{connection.id}.{transaction.id}", "time": self.clock.seconds(), "state": state,
            "reply": reply, "ip": connection.remote_ip, "name": connection.remote_host or "",
            "helo": connection.hello_host or "",
            "sender": "" if transaction.sender is None else str(transaction.sender) or "<>",
            "recipients": recipients[:_MAX_RECIPIENTS], "more": max(0, len(recipients) - _MAX_RECIPIENTS),
            "tls": f"{tls.version} {tls.cipher}".strip() if tls is not None else "",
            "auth": connection.auth_user or "", "size": transaction.data_size, "by": by,
            "verdicts": live.connection_cells.merged(live.transaction_cells),
        }

    def live(self) -> list[dict[str, Any]]:
        """Rows for the sessions open now, oldest first.

        At most ``live_max``: 5,000 idle sessions would make every update a megabyte.
        """
        rows = []
        for live in itertools.islice(self._live.values(), self.live_max):
            session = live.session
            row = self.row(session, session.transaction, live, "open", "")
            row["time"] = live.started
            rows.append(row)
        return rows

    def session_count(self) -> int:
        """Sessions open now."""
        return len(self._live)

    def _add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._new.append(row)
        if len(self._new) > self.keep:
            del self._new[: len(self._new) - self.keep]

    def state(self) -> dict[str, Any]:
        """Everything a new subscriber needs."""
        return {"plugins": self.plugins, "rows": list(self.rows), "live": self.live(),
                "sessions": self.session_count(),
                "ticks": list(self.ticks), "keep": self.keep, "history": self.ticks.maxlen,
                "tick": self.tick_seconds}

    def tick(self) -> None:
        """Close the second: record its figures and send one event to each subscriber."""
        figures = {"time": self.clock.seconds(), "accepted": self._messages["accepted"],
                   "refused": self._messages["refused"], "deferred": self._messages["deferred"],
                   "refusals": dict(self._refusals)}
        self.ticks.append(figures)
        self._messages.clear()
        self._refusals.clear()
        new, self._new = self._new, []
        if not self.subscribers:
            return
        update = _dumps({"plugins": self.plugins, "rows": new, "live": self.live(),
                         "sessions": self.session_count(), "figures": figures})
        state: str | None = None
        for subscriber in list(self.subscribers):
            if subscriber in self.stale:
                state = state or _dumps(self.state())
                if subscriber.send("state", state):
                    self.stale.discard(subscriber)
            elif not subscriber.send("update", update):
                self.stale.add(subscriber)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Send ``subscriber`` the state now and every update from now on; returns the unsubscribe."""
        self.subscribers.add(subscriber)
        if not subscriber.send("state", _dumps(self.state())):
            self.stale.add(subscriber)

        def unsubscribe() -> None:
            self.subscribers.discard(subscriber)
            self.stale.discard(subscriber)

        return unsubscribe


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


__all__ = ["Activity", "Subscriber", "QUIET_HOOKS"]
