"""Delivery Status Notification parameters (RFC 3461): xtext, ``RET``/``ENVID`` and ``NOTIFY``/``ORCPT``.

A client asks for DSNs with parameters on MAIL (``RET=FULL|HDRS``,
``ENVID=<xtext>``) and on each RCPT (``NOTIFY=NEVER|SUCCESS,FAILURE,DELAY``,
``ORCPT=<addr-type>;<xtext>``). They are parsed and checked here into
value objects that the transaction (:class:`MessageDSN`) and each recipient
(:class:`RecipientDSN`) carry to the queue plugins, which write them into
the stored message or pass them on to a downstream that offers DSN.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_XTEXT_SAFE = re.compile(rb"[!-*,-<>-~]")
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*\Z")
_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\Z")
_NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")
#: RFC 3461 4.4: an ENVID is at most 100 characters; 4.2: an ORCPT at most 500
MAX_ENVID = 100
MAX_ORCPT = 500


class DSNError(ValueError):
    """A DSN parameter that is not RFC 3461 syntax; the message names it."""


def xtext(value: str) -> str:
    """Encode ``value`` as RFC 3461 xtext (``+`` and ``=``, controls and non-ASCII as ``+HH``)."""
    return "".join(chr(byte) if _XTEXT_SAFE.match(bytes([byte])) else f"+{byte:02X}"
                   for byte in value.encode("utf-8"))


def decode_xtext(value: str, strict: bool = True) -> str:
    """Decode RFC 3461 xtext; :class:`DSNError` if ``value`` is not xtext (unless not ``strict``)."""
    if strict and not _XTEXT.match(value):
        raise DSNError(f"not xtext: {value[:40]!r}")
    if "+" not in value:
        return value
    raw = _HEX.sub(lambda m: chr(int(m.group(1), 16)), value)
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class MessageDSN:
    """The DSN parameters of MAIL: what to return in a DSN (``FULL``/``HDRS``) and the envelope id."""

    ret: str | None = None
    envid: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str | None]) -> MessageDSN | None:
        """The ``ret``/``envid`` of MAIL's parameters (lower-cased keys); None when neither was given."""
        if "ret" not in params and "envid" not in params:
            return None
        ret = envid = None
        if "ret" in params:
            ret = (params["ret"] or "").upper()
            if ret not in ("FULL", "HDRS"):
                raise DSNError("RET must be FULL or HDRS")
        if "envid" in params:
            encoded = params["envid"] or ""
            if not encoded or len(encoded) > MAX_ENVID:
                raise DSNError(f"ENVID must be 1 to {MAX_ENVID} characters of xtext")
            envid = decode_xtext(encoded)
            if not envid.isprintable():
                raise DSNError("ENVID must be printable")
        return cls(ret, envid)

    def params(self) -> list[str]:
        """The parameters as they go on a downstream MAIL command."""
        out = [f"RET={self.ret}"] if self.ret else []
        if self.envid is not None:
            out.append(f"ENVID={xtext(self.envid)}")
        return out


@dataclass(frozen=True, slots=True)
class RecipientDSN:
    """The DSN parameters of one RCPT.

    ``notify`` is ``("NEVER",)`` or a tuple of ``SUCCESS``, ``FAILURE``,
    ``DELAY`` (None: not given, the receiver's default of FAILURE,DELAY).
    ``orcpt`` is the original recipient as ``(addr-type, value)`` with the
    value still encoded as the client sent it (xtext for ``rfc822``, RFC 6533's
    form for ``utf-8``); :attr:`original_recipient` decodes an ``rfc822`` one.
    """

    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str | None]) -> RecipientDSN | None:
        """The ``notify``/``orcpt`` of RCPT's parameters; None when neither was given."""
        if "notify" not in params and "orcpt" not in params:
            return None
        words: tuple[str, ...] | None = None
        if "notify" in params:
            words = tuple(word.upper() for word in (params["notify"] or "").split(","))
            if words != ("NEVER",) and (len(set(words)) != len(words)
                                        or not all(word in _NOTIFY_WORDS for word in words)):
                raise DSNError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
        original: tuple[str, str] | None = None
        if "orcpt" in params:
            orcpt = params["orcpt"] or ""
            addr_type, semicolon, value = orcpt.partition(";")
            if not semicolon or not _ATOM.match(addr_type) or not value or len(orcpt) > MAX_ORCPT:
                raise DSNError("ORCPT must be addr-type;xtext")
            if addr_type.lower() == "rfc822":
                decode_xtext(value)
            elif any(ord(char) < 33 or char == "=" for char in value):
                raise DSNError("ORCPT value has forbidden characters")
            original = (addr_type, value)
        return cls(words, original)

    @property
    def original_recipient(self) -> str | None:
        """The decoded ORCPT address of type ``rfc822`` (for other types the value as given)."""
        if self.orcpt is None:
            return None
        addr_type, value = self.orcpt
        return decode_xtext(value) if addr_type.lower() == "rfc822" else value

    def params(self) -> list[str]:
        """The parameters as they go on a downstream RCPT command."""
        out = [f"NOTIFY={','.join(self.notify)}"] if self.notify else []
        if self.orcpt is not None:
            out.append(f"ORCPT={self.orcpt[0]};{self.orcpt[1]}")
        return out
