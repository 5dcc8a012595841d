"""Shared helpers of the policy plugins: ``reject``, ``reject_type``, ``loglevel``, naughty, immunity.

These are qpsmtpd's ``Qpsmtpd::Plugin`` helpers (``get_reject``,
``get_reject_type``, ``is_immune``, ``store_deferred_reject``, ``is_naughty``,
``adjust_karma``) as a mixin, so :class:`~qptwisted.core.plugin.Plugin` stays small
and no plugin copies them. Derive from :class:`PolicyPlugin`::

    class BadThing(PolicyPlugin):
        name = "bad_thing"
        defaults = {"reject": "1"}

        def hook_mail(self, transaction, sender, **params):
            if sender.host == "bad.example":
                return self.get_reject(transaction, "go away", "bad host")
            return DECLINED

Common arguments (``name value`` pairs on the ``config/plugins`` line):

``reject 0|1|naughty``
    0 only logs; 1 refuses now; ``naughty`` stores the refusal on the
    connection for the ``naughty`` plugin to carry out later.
``reject_type perm|temp|disconnect|temp_disconnect``
    (also ``hard``/``soft``) DENY, DENYSOFT, DENY_DISCONNECT, DENYSOFT_DISCONNECT.
``loglevel N|+N|-N``
    log every line of this plugin at level N, or shift its levels by N.

Unlike qpsmtpd, an odd number of arguments or an unknown key is an error at
start-up that names the plugin, not a log line at run time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

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
)
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

_FALSE = frozenset({"0", "", "no", "off", "false"})
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


def parse_pairs(plugin: str, args: Iterable[str], known: Iterable[str] | None = None,
                defaults: Mapping[str, str] | None = None) -> dict[str, str]:
    """``key value key value ...`` into a dict (qpsmtpd's ``%args = @_``).

    Keys are lower-cased. ``known`` (plus the common ``reject``,
    ``reject_type``, ``loglevel``) lists the accepted keys; anything else raises
    ``ValueError`` naming the plugin.
    """
    words = list(args)
    if len(words) % 2:
        raise ValueError(f"{plugin}: arguments must be 'name value' pairs, got {words}")
    result = dict(defaults or {})
    allowed = None if known is None else set(known) | {"reject", "reject_type", "loglevel"}
    for key, value in zip(words[::2], words[1::2], strict=True):
        key = key.lower()
        if allowed is not None and key not in allowed:
            raise ValueError(f"{plugin}: unknown argument {key!r} (known: {', '.join(sorted(allowed))})")
        result[key] = value
    return result


def connection_of(scope: Scope) -> Connection:
    """The connection of a transaction (or the connection itself)."""
    return scope if isinstance(scope, Connection) else scope.connection


def is_regex(entry: str) -> bool:
    """True if a badmailfrom/badrcptto entry uses regex characters (qpsmtpd's test)."""
    return bool(_REGEX_CHARS.search(entry))


class Policy:
    """The mixin: argument parsing and the reject/naughty/immunity helpers.

    Subclasses set ``defaults`` (argument defaults) and ``known_args`` (the
    keys they accept besides the common ones; ``None`` accepts any) and call
    :meth:`parse_args` from ``register`` (the default ``register`` does).
    """

    defaults: ClassVar[Mapping[str, str]] = {}
    known_args: ClassVar[Iterable[str] | None] = ()
    opts: dict[str, str]
    plugin_name: str
    engine: Any

    def register(self, *args: str) -> None:
        """Parse ``name value`` pairs into :attr:`opts`."""
        self.parse_args(args)

    def parse_args(self, args: Iterable[str]) -> dict[str, str]:
        """Parse the ``config/plugins`` arguments into :attr:`opts` and check the common ones."""
        self.opts = parse_pairs(self.plugin_name, args, self.known_args, self.defaults)
        reject_type = self.opts.get("reject_type")
        if reject_type is not None and reject_type.lower() not in REJECT_TYPES:
            raise ValueError(f"{self.plugin_name}: reject_type must be one of {', '.join(REJECT_TYPES)}")
        loglevel = self.opts.get("loglevel")
        if loglevel is not None and not re.fullmatch(r"[0-7]|[+-][0-7]", loglevel):
            raise ValueError(f"{self.plugin_name}: loglevel must be N, +N or -N (0..7)")
        return self.opts

    # -- logging ------------------------------------------------------------
    def adjust_log_level(self, level: int) -> int:
        """Apply the ``loglevel`` argument: a fixed level, or a shift clamped to 0..7."""
        adjust = getattr(self, "opts", {}).get("loglevel")
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
    @property
    def reject(self) -> str:
        """The ``reject`` argument, lower-cased (``"1"`` when not given)."""
        return getattr(self, "opts", {}).get("reject", "1").lower()

    def get_reject_type(self, default: Code = DENY, override: str | None = None) -> Code:
        """The code for ``reject_type`` (or ``override``), else ``default``."""
        word = override or getattr(self, "opts", {}).get("reject_type")
        return REJECT_TYPES.get(word.lower(), default) if word else default

    def get_reject(self, scope: Scope, message: str, log_message: str = "",
                   default: Code = DENY) -> tuple[Code, str] | Code:
        """Refuse as the ``reject`` argument says: log only, now, or via ``naughty``."""
        suffix = f", {log_message}" if log_message else ""
        reject = self.reject
        if reject in _FALSE:
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
            notes["naughty_reject_type"] = getattr(self, "opts", {}).get("reject_type")
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
    """A :class:`~qptwisted.core.plugin.Plugin` with the :class:`Policy` helpers."""

    def config_path(self, name: str) -> str:
        """A file named by a plugin argument: relative names are taken in the config directory."""
        if os.path.isabs(name):
            return name
        return str(self.engine.config.path(name))
