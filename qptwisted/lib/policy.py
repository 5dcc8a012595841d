"""Shared helpers of the policy plugins: ``reject``, ``reject_type``, ``loglevel``, naughty, immunity.

These are qpsmtpd's ``Qpsmtpd::Plugin`` helpers (``get_reject``,
``get_reject_type``, ``is_immune``, ``store_deferred_reject``, ``is_naughty``,
``adjust_karma``) as a mixin, so :class:`~qptwisted.core.plugin.Plugin` stays small
and no plugin copies them. Derive from :class:`PolicyPlugin`::

    class BadThing(PolicyPlugin):
        name = "bad_thing"
        reject_type = reject_type_argument("temp")   # another default: declare it again

        def hook_mail(self, transaction, sender, **params):
            if sender.host == "bad.example":
                return self.get_reject(transaction, "go away", "bad host")
            return DECLINED

Common arguments (declared here, ``name value`` on the ``config/plugins`` line):

``reject 0|1|naughty``
    0 only logs; 1 refuses now; ``naughty`` stores the refusal on the
    connection for the ``naughty`` plugin to carry out later (``yes``/``no``
    and the other spellings of :func:`~qptwisted.core.config.parse_bool` work too).
``reject_type perm|temp|disconnect|temp_disconnect``
    (also ``hard``/``soft``) DENY, DENYSOFT, DENY_DISCONNECT, DENYSOFT_DISCONNECT.
``loglevel N|+N|-N``
    log every line of this plugin at level N (``LOGINFO`` and friends work
    too), or shift its levels by N.

Unlike qpsmtpd, a wrong value or an unknown argument is an error at start-up
that names the plugin and the argument, not a log line at run time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from qptwisted.core.arguments import Argument, Kind, arg
from qptwisted.core.codes import (
    DECLINED,
    DENY,
    DENY_DISCONNECT,
    DENYSOFT,
    DENYSOFT_DISCONNECT,
    DONE,
    LOGDEBUG,
    LOGINFO,
    OK,
    Code,
    parse_level,
)
from qptwisted.core.config import parse_bool
from qptwisted.core.plugin import Plugin
from qptwisted.mail.connection import Connection
from qptwisted.mail.transaction import Transaction

#: ``reject_type`` words and the codes they stand for
REJECT_TYPES: dict[str, Code] = {
    "temp": DENYSOFT, "soft": DENYSOFT, "perm": DENY, "hard": DENY,
    "disconnect": DENY_DISCONNECT, "temp_disconnect": DENYSOFT_DISCONNECT,
}

#: qpsmtpd's return code names, for config files that name them (``rcpt_regexp``, ``hosts_allow``)
CODE_NAMES: dict[str, Code] = {
    "OK": OK, "DENY": DENY, "DENYSOFT": DENYSOFT, "DENY_DISCONNECT": DENY_DISCONNECT,
    "DENYHARD": DENY_DISCONNECT, "DENYSOFT_DISCONNECT": DENYSOFT_DISCONNECT,
    "DECLINED": DECLINED, "DONE": DONE,
}

_REGEX_CHARS = re.compile(r"[/^$*+!%?\\]")

Scope = Transaction | Connection


def return_code(name: str) -> Code | None:
    """A code from its qpsmtpd name (``DENY``, ``denysoft``) or number (``901``)."""
    if name.isdigit():
        try:
            return Code(int(name))
        except ValueError:
            return None
    return CODE_NAMES.get(name.upper())


def reject_argument(default: str = "1", help: str = "", extra: Iterable[str] = ()) -> Any:  # noqa: A002
    """Declare ``reject``: ``0|1|naughty`` (and yes/no), plus the plugin's ``extra`` words.

    The value is ``"0"``, ``"1"``, ``"naughty"`` or one of ``extra`` (``dnsbl``
    adds ``connect``).
    """
    words = ("naughty", *(word.lower() for word in extra))

    def parse(value: str, plugin: Any) -> str:
        word = value.strip().lower()
        if word in words:
            return word
        try:
            return "1" if parse_bool(word) else "0"
        except ValueError:
            raise ValueError(f"{value!r} is not one of 0, 1, {', '.join(words)} (or yes/no)") from None

    return Argument(Kind("|".join(("0", "1", *words)), parse), default,
                    help or "0: only log; 1: refuse now; naughty: leave it to the naughty plugin")


def reject_type_argument(default: str | None = None, help: str = "", **options: Any) -> Any:  # noqa: A002
    """Declare ``reject_type`` with ``default`` (``None``: the caller's code); ``options`` as for ``arg``."""
    return arg.choice(tuple(REJECT_TYPES), default, help or "the code of a refusal: perm (5xx), temp (4xx), "
                      "disconnect, temp_disconnect (also hard, soft)", **options)


def _log_shift(value: str, plugin: Any) -> str:
    word = value.strip()
    if re.fullmatch(r"[+-][0-7]", word):
        return word
    return str(parse_level(word))


def loglevel_argument(default: str | None = None, help: str = "") -> Any:  # noqa: A002
    """Declare ``loglevel``: ``N`` (every line at level N) or ``+N``/``-N`` (every level shifted)."""
    return Argument(Kind("log level or shift", _log_shift), default,
                    help or "log every line at this level (6, LOGINFO), or shift the levels (+1, -2)")


def connection_of(scope: Scope) -> Connection:
    """The connection of a transaction (or the connection itself)."""
    return scope if isinstance(scope, Connection) else scope.connection


def is_regex(entry: str) -> bool:
    """True if a badmailfrom/badrcptto entry uses regex characters (qpsmtpd's test)."""
    return bool(_REGEX_CHARS.search(entry))


class Policy:
    """The mixin: the common arguments and the reject/naughty/immunity helpers.

    A subclass that needs another default declares the argument again
    (``reject = reject_argument("0")``).
    """

    reject: str = reject_argument()
    reject_type: str | None = reject_type_argument()
    loglevel: str | None = loglevel_argument()
    plugin_name: str
    engine: Any

    # -- logging ------------------------------------------------------------
    def adjust_log_level(self, level: int) -> int:
        """Apply the ``loglevel`` argument: a fixed level, or a shift clamped to 0..7."""
        adjust = self.loglevel
        if not adjust:
            return level
        if adjust[0] in "+-":
            return min(7, max(0, level + int(adjust)))
        return int(adjust)

    def log(self, level: int, *message: object) -> None:
        """Log like :meth:`Plugin.log`, honouring the plugin's ``loglevel`` argument."""
        text = " ".join(str(part) for part in message)
        self.engine.log(self.adjust_log_level(level), text, plugin=self.plugin_name)

    # -- rejecting ----------------------------------------------------------
    def get_reject_type(self, default: Code = DENY, override: str | None = None) -> Code:
        """The code for ``reject_type`` (or ``override``), else ``default``."""
        word = override or self.reject_type
        return REJECT_TYPES.get(word.lower(), default) if word else default

    def get_reject(self, scope: Scope, message: str, log_message: str = "",
                   default: Code = DENY) -> tuple[Code, str] | Code:
        """Refuse as the ``reject`` argument says: log only, now, or via ``naughty``."""
        suffix = f", {log_message}" if log_message else ""
        reject = self.reject
        if reject == "0":
            self.log(LOGINFO, f"fail, reject disabled{suffix}")
            return DECLINED
        if reject == "naughty":
            self.log(LOGINFO, f"fail, NAUGHTY{suffix}")
            return self.store_deferred_reject(scope, message)
        self.log(LOGINFO, f"fail{suffix}")
        return self.get_reject_type(default), message

    def store_deferred_reject(self, scope: Scope, message: str) -> Code:
        """Remember a refusal in the connection note ``naughty`` for the ``naughty`` plugin."""
        notes = connection_of(scope).notes
        previous = notes.get("naughty")
        notes["naughty"] = f"{previous}\n{message}" if previous and isinstance(previous, str) else message
        if not notes.get("naughty_reject_type"):
            notes["naughty_reject_type"] = self.reject_type
        return DECLINED

    def is_immune(self, scope: Scope) -> bool:
        """True for relay clients, whitelisted hosts/senders, and already naughty or rejected clients."""
        connection = connection_of(scope)
        reason = None
        if connection.relay_client:
            reason = "relay client"
        elif connection.notes.get("whitelisthost"):
            reason = "whitelisted host"
        elif isinstance(scope, Transaction) and scope.notes.get("whitelistsender"):
            reason = "whitelisted sender"
        elif connection.notes.get("naughty"):
            reason = "naughty"
        elif connection.notes.get("rejected"):
            reason = "already rejected"
        if reason is None:
            return False
        self.log(LOGINFO, f"skip, {reason}")
        return True

    def is_naughty(self, scope: Scope, value: str | None = None) -> bool:
        """True if the client is already naughty or rejected; ``value`` marks it naughty."""
        notes = connection_of(scope).notes
        if value is not None:
            notes["naughty"] = value
        if notes.get("naughty"):
            self.log(LOGINFO, "skip, naughty")
            return True
        if notes.get("rejected"):
            self.log(LOGINFO, "skip, already rejected")
            return True
        return False

    def adjust_karma(self, scope: Scope, value: int) -> int:
        """Add ``value`` to the connection note ``karma`` (read by ``karma`` and ``tarpit``)."""
        notes = connection_of(scope).notes
        notes["karma"] = notes.get("karma", 0) + value
        self.log(LOGDEBUG, f"karma {value} ({notes['karma']})")
        return value


class PolicyPlugin(Policy, Plugin):
    """A :class:`~qptwisted.core.plugin.Plugin` with the :class:`Policy` helpers and arguments."""
