"""earlytalker: refuse clients that talk before they are spoken to.

A real MTA waits for the greeting (and for the ``354`` after DATA); many
spam engines do not. The plugin holds the greeting back for ``wait`` seconds
and looks whether the client sent anything meanwhile. Nothing blocks: the
``connect`` (or ``data``) hook returns a Deferred that fires on the engine's
clock; the engine keeps reading at those two points and sets
``connection.early_talker`` when bytes arrive.

Arguments (``name value`` pairs):

``wait N``
    seconds to wait (default 1). Keep it short: some senders give up
    after 30 seconds.
``check-at CONNECT|DATA``
    where to check; may be given twice (default ``CONNECT`` only).
    ``check_at`` works too: ``-`` and ``_`` are the same in argument names.
``defer-reject 0|1``
    greet normally but refuse every MAIL of an early talker (default 0).
``reject 0|1|naughty``, ``reject_type perm|temp|disconnect|temp_disconnect``, ``loglevel``
    as for every policy plugin (default ``reject 1``, ``reject_type perm``).
``action deny|denysoft|log``
    qpsmtpd's old spelling of ``reject``/``reject_type``.

Immune clients (relay clients, whitelisted hosts) are not delayed. An early
talker gets the connection note ``earlytalker`` and karma -1.

Refused at connect: ``550 Connecting host started transmitting before SMTP
greeting`` and the connection is closed.

config/plugins::

    earlytalker wait 2 check-at CONNECT reject 1
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from qptwisted import DECLINED, LOGINFO, Address, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin, reject_type_argument

MESSAGE = "Connecting host started transmitting before SMTP greeting"


class EarlyTalker(PolicyPlugin):
    """Delay the greeting (or the 354) and refuse clients that talk into the silence."""

    name = "earlytalker"
    wait: float = arg.duration(1, "how long the greeting (or the 354) is held back")
    check_at: list[str] = arg.choice(("connect", "data"), help="where to check: CONNECT (default), DATA; "
                                     "may be given twice", repeat=True)
    defer_reject: bool = arg.bool(False, "greet normally but refuse every MAIL of an early talker")
    action: str | None = arg.choice(("deny", "denysoft", "log"), None,
                                    "qpsmtpd's old spelling of reject/reject_type")
    reject_type = reject_type_argument(None, "the code of a refusal (default perm; temp with action "
                                       "denysoft)")

    def register(self, *args: str) -> None:
        """Apply the old ``action`` spelling."""
        self.phases = {phase.upper() for phase in self.check_at} or {"CONNECT"}
        if self.action is not None:
            self.reject = "1" if self.action.startswith("deny") else "0"
        if self.reject_type is None:
            self.reject_type = "temp" if self.action == "denysoft" else "perm"
        self._timers: dict[int, IDelayedCall] = {}

    def _watch(self, transaction: Transaction) -> HookAnswer:
        """Wait ``wait`` seconds; the engine notes meanwhile whether the client talks."""
        if self.is_immune(transaction):
            return DECLINED
        connection = transaction.connection
        before = connection.early_talker
        done: Deferred[None] = Deferred(lambda _: self._cancel(connection.id))
        self._timers[connection.id] = self.clock.callLater(self.wait, self._fire, connection.id, done)
        return done.addCallback(lambda _: self._judge(transaction, connection.early_talker and not before))

    def _fire(self, key: int, done: Deferred[None]) -> None:
        self._timers.pop(key, None)
        done.callback(None)

    def _cancel(self, key: int) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _judge(self, transaction: Transaction, talked: bool) -> HookAnswer:
        ip = transaction.connection.remote_ip
        if not talked:
            self.log(LOGINFO, f"pass, {ip} said nothing spontaneous")
            return DECLINED
        transaction.connection.notes["earlytalker"] = True
        self.adjust_karma(transaction, -1)
        if self.defer_reject:
            self.log(LOGINFO, f"fail, {ip} started talking before we said hello (deferred)")
            return DECLINED
        return self.get_reject(transaction, MESSAGE, f"{ip} started talking before we said hello")

    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        if "CONNECT" not in self.phases:
            return DECLINED
        return self._watch(transaction)

    def hook_data(self, transaction: Transaction) -> HookAnswer:
        if "DATA" not in self.phases:
            return DECLINED
        return self._watch(transaction)

    def hook_mail(self, transaction: Transaction, sender: Address, **params: str) -> HookAnswer:
        if not self.defer_reject or not transaction.connection.notes.get("earlytalker"):
            return DECLINED
        return self.get_reject(transaction, MESSAGE, "early talker")

    def hook_disconnect(self, transaction: Transaction) -> HookAnswer:
        self._cancel(transaction.connection.id)
        return DECLINED
