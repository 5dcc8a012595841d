"""RFC 5321 paths: the :class:`Address` value object and its parser.

Handles the null path ``<>``, the bare ``<postmaster>`` recipient, quoted
local parts, address literals (``[192.0.2.1]``, ``[IPv6:...]``), source
routes (dropped, as RFC 5321 appendix C allows) and, with SMTPUTF8, UTF-8
local parts and domains (RFC 6531).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from qptwisted.mail.dsn import RecipientDSN

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ATEXT_UTF8 = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_QTEXT = r'(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])'
_QTEXT_UTF8 = r'(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_LABEL_UTF8 = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"


def _mailbox_re(atext: str, qtext: str, label: str) -> re.Pattern[str]:
    local = rf'(?P<local>{atext}+(?:\.{atext}+)*|"{qtext}*")'
    domain = rf"(?P<domain>{label}(?:\.{label})*|\[[^\[\]\\]+\])"
    return re.compile(rf"{local}@{domain}\Z")


_MAILBOX = _mailbox_re(_ATEXT, _QTEXT, _LABEL)
_MAILBOX_UTF8 = _mailbox_re(_ATEXT_UTF8, _QTEXT_UTF8, _LABEL_UTF8)
_DOT_ATOM = re.compile(rf"{_ATEXT_UTF8}+(?:\.{_ATEXT_UTF8}+)*\Z")
_ROUTE = re.compile(r"@[^:,]+(?:,@[^:,]+)*:")
_PARAM_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\Z")


class AddressError(ValueError):
    """A path that is not valid RFC 5321 syntax."""


@dataclass(frozen=True, slots=True)
class Address:
    """An envelope address: ``user`` (local part, unquoted) and ``host``.

    The null sender has both empty. ``str()`` gives the SMTP form ``<u@h>``.
    ``notes`` is the address scope of qpsmtpd's notes. A recipient also
    carries its DSN request (``dsn``: ``NOTIFY``/``ORCPT``, RFC 3461) and
    its ``policy_group`` (see ``docs/esmtp.md``); neither takes part in
    comparisons.
    """

    user: str
    host: str
    notes: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    dsn: RecipientDSN | None = field(default=None, compare=False, hash=False, repr=False)
    policy_group: str | None = field(default=None, compare=False, hash=False, repr=False)

    @classmethod
    def parse(cls, path: str, *, utf8: bool = False, allow_postmaster: bool = False,
              allow_null: bool = True) -> Address:
        """Parse ``<local@domain>`` (angle brackets required).

        ``utf8`` allows UTF-8 (the client said SMTPUTF8);
        ``allow_postmaster`` allows the bare ``<postmaster>`` of RFC 5321 4.1.1.3.
        Raises :class:`AddressError` with a short reason.
        """
        if len(path) < 2 or path[0] != "<" or path[-1] != ">":
            raise AddressError("angle brackets required")
        inner = path[1:-1]
        if not inner:
            if allow_null:
                return NULL_SENDER
            raise AddressError("null path not allowed here")
        if inner[0] == "@":
            route = _ROUTE.match(inner)
            if route is None:
                raise AddressError("bad source route")
            inner = inner[route.end():]
        if allow_postmaster and inner.lower() == "postmaster":
            return cls(inner, "")
        return cls(*_mailbox(inner, utf8))

    @property
    def is_null(self) -> bool:
        """True for the null reverse-path ``<>``."""
        return not self.user and not self.host

    @property
    def address(self) -> str:
        """``user@host`` with the local part quoted where RFC 5321 needs it."""
        if self.is_null:
            return ""
        user = _quoted(self.user)
        return f"{user}@{self.host}" if self.host else user

    def format(self) -> str:
        """The path as it goes into SMTP: ``<user@host>``."""
        return f"<{self.address}>"

    def __str__(self) -> str:
        return self.format()

    @property
    def canonical(self) -> str:
        """``user@host`` with the domain lower-cased, for comparisons and lookups."""
        return f"{self.user}@{self.host.lower()}" if self.host else self.user


NULL_SENDER = Address("", "")


@lru_cache(maxsize=4096)
def _mailbox(inner: str, utf8: bool) -> tuple[str, str]:
    """Check ``local@domain`` and unquote the local part (remembered: senders and recipients recur)."""
    if not utf8 and not inner.isascii():
        raise AddressError("UTF-8 address without SMTPUTF8")
    match = (_MAILBOX_UTF8 if utf8 else _MAILBOX).match(inner)
    if match is None:
        raise AddressError("not a valid mailbox")
    local, domain = match.group("local"), match.group("domain")
    if domain[0] == "[":
        _check_literal(domain[1:-1])
    if len(local.encode()) > 64 or len(domain.encode()) > 255:
        raise AddressError("address too long")
    if local[0] == '"':
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return local, domain


@lru_cache(maxsize=4096)
def _quoted(user: str) -> str:
    """The local part as SMTP writes it: quoted where it is no dot-atom (remembered: it is asked often)."""
    if _DOT_ATOM.match(user):
        return user
    return '"' + user.replace("\\", "\\\\").replace('"', '\\"') + '"'



def _check_literal(literal: str) -> None:
    try:
        if literal[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(literal[5:])
        elif ":" in literal:
            if not _GENERAL_LITERAL.match(literal):
                raise AddressError("bad address literal")
        else:
            ipaddress.IPv4Address(literal)
    except ipaddress.AddressValueError as err:
        raise AddressError("bad address literal") from err


def split_path(text: str) -> tuple[str, str]:
    """Split a MAIL/RCPT argument into the path and the rest (the parameters).

    ``<a b@c> SIZE=1`` keeps quoted spaces in the path. Without angle brackets
    the path is the first word, which only a ``*_pre`` hook can make valid.
    """
    text = text.strip()
    if not text.startswith("<"):
        path, _, rest = text.partition(" ")
        return path, rest
    end = text.find(">")
    if end > 0 and '"' not in text[:end] and "\\" not in text[:end]:
        return text[: end + 1], text[end + 1 :]  # the usual path: nothing quoted, no character walk
    quoted = False
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return text[: index + 1], text[index + 1 :]
    return text, ""


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ESMTP parameters ``KEY[=VALUE] ...``; keys come back lower-cased.

    Raises :class:`AddressError` for a keyword that is not RFC 5321 syntax
    or that is given twice.
    """
    params: dict[str, str | None] = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if not _PARAM_KEY.match(key):
            raise AddressError(f"bad parameter {word!r}")
        if key.lower() in params:
            raise AddressError(f"parameter {key} given twice")
        params[key.lower()] = value if eq else None
    return params
