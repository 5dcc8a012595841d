"""Return codes of hook chains and the value a chain answers with.

The numbers are qpsmtpd's, so logs and habits carry over.
"""

from __future__ import annotations

from collections.abc import Awaitable
from enum import IntEnum
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


class Code(IntEnum):
    """What a plugin tells the engine (qpsmtpd's constants)."""

    OK = 900
    DENY = 901
    DENYSOFT = 902
    DENY_DISCONNECT = 903
    DENYSOFT_DISCONNECT = 904
    DECLINED = 909
    DONE = 910


OK = Code.OK
DENY = Code.DENY
DENYSOFT = Code.DENYSOFT
DENY_DISCONNECT = Code.DENY_DISCONNECT
DENYHARD = Code.DENY_DISCONNECT
DENYSOFT_DISCONNECT = Code.DENYSOFT_DISCONNECT
DECLINED = Code.DECLINED
DONE = Code.DONE

#: codes after which the ``deny`` observer hook fires
DENY_CODES = frozenset({DENY, DENYSOFT, DENY_DISCONNECT, DENYSOFT_DISCONNECT})


class HookResult(NamedTuple):
    """The answer of a hook chain: a code, an optional message, an optional value.

    ``message`` is the text for the SMTP reply (``\\n`` separates lines).
    ``value`` carries what some hooks hand back besides a reply: the values of a
    ``config`` hook, the replacement address of ``mail_pre``, the parser of a
    ``*_parse`` hook, the line of ``received_line``.
    """

    code: Code
    message: str | None = None
    value: Any = None
    plugin: str | None = None


#: the answer of a chain in which no plugin said anything
NO_ANSWER = HookResult(DECLINED)

#: what a hook method may return (the type to annotate hooks with)
HookAnswer: TypeAlias = "Code | HookResult | tuple[Any, ...] | None | Deferred[Any] | Awaitable[Any]"


class LogLevel(IntEnum):
    """syslog-style levels, as qpsmtpd's LOGDEBUG ... LOGEMERG."""

    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERROR = 3
    WARN = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


LOGEMERG, LOGALERT, LOGCRIT, LOGERROR, LOGWARN, LOGNOTICE, LOGINFO, LOGDEBUG = tuple(LogLevel)

_LEVEL_NAMES = {"WARNING": LogLevel.WARN, "ERR": LogLevel.ERROR, "EMERGENCY": LogLevel.EMERG,
                "CRITICAL": LogLevel.CRIT, **{level.name: level for level in LogLevel}}


def parse_level(text: str, base: int = int(LogLevel.WARN)) -> int:
    """A log level as qpsmtpd's config files and plugin arguments write it.

    ``0``..``7``; ``LOGINFO``, ``LOGDEBUG`` ... (with or without the ``LOG``
    prefix, any case); ``+N``/``-N`` relative to ``base``, clamped to 0..7.
    Raises ``ValueError`` for anything else.
    """
    word = text.strip()
    if word[:1] in "+-" and word[1:].isdigit():
        return min(7, max(0, base + int(word)))
    if word.isdigit() and int(word) <= 7:
        return int(word)
    name = word.upper()
    name = name[3:] if name.startswith("LOG") else name
    level = _LEVEL_NAMES.get(name)
    if level is None:
        raise ValueError(f"{text!r} is not a log level (0..7, LOGDEBUG .. LOGEMERG, +N, -N)")
    return int(level)


def to_result(value: Any, plugin: str | None = None) -> HookResult | None:
    """Turn what a hook returned into a :class:`HookResult`.

    Accepted: ``None`` (same as DECLINED), a :class:`Code` (or its number), a
    tuple ``(code, message)`` or ``(code, value, ...)``, a :class:`HookResult`.
    Returns ``None`` for anything else, which the runner logs and skips.
    """
    if value is None:
        return HookResult(DECLINED, None, None, plugin)
    if isinstance(value, HookResult):
        return value if value.plugin else value._replace(plugin=plugin)
    if isinstance(value, tuple):
        if not value:
            return None
        code = _code(value[0])
        if code is None:
            return None
        if len(value) == 1:
            return HookResult(code, None, None, plugin)
        first = value[1]
        if len(value) == 2:
            if first is None or isinstance(first, str):
                return HookResult(code, first, None, plugin)
            return HookResult(code, None, first, plugin)
        return HookResult(code, None, list(value[1:]), plugin)
    code = _code(value)
    return None if code is None else HookResult(code, None, None, plugin)


def _code(value: Any) -> Code | None:
    if isinstance(value, Code):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Code(value)
        except ValueError:
            return None
    return None
