"""The ESMTP extensions the engine offers: its EHLO keywords and the MAIL/RCPT parameters they allow.

Every parameter of MAIL and RCPT is checked here. A parameter of no
extension we offer gets ``555 5.5.4`` (RFC 5321 4.1.1.11), unless a plugin
offered an EHLO keyword of that name (``transaction.notes["capabilities"]``),
in which case the plugin's hooks get it as they get every parameter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from qptwisted.core.replies import Reply
from qptwisted.core.settings import Settings
from qptwisted.mail.connection import Connection
from qptwisted.mail.dsn import DSNError, MessageDSN, RecipientDSN

#: MAIL parameters of the engine's extensions: SIZE (RFC 1870), BODY (RFC 6152, 3030), SMTPUTF8 (RFC 6531),
#: RET/ENVID (RFC 3461), AUTH (RFC 4954), REQUIRETLS (RFC 8689)
MAIL_PARAMETERS = frozenset({"size", "body", "smtputf8", "ret", "envid", "auth", "requiretls"})
#: RCPT parameters: NOTIFY/ORCPT (RFC 3461)
RCPT_PARAMETERS = frozenset({"notify", "orcpt"})
_BODY_TYPES = ("7BIT", "8BITMIME")


class ParameterError(Exception):
    """A MAIL or RCPT parameter the command must be refused for; ``reply`` says how."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class MailOptions:
    """What the parameters of one MAIL command ask for."""

    size: int | None = None
    body_type: str | None = None
    dsn: MessageDSN | None = None
    requiretls: bool = False


def ehlo_keywords(settings: Settings, connection: Connection) -> list[str]:
    """The engine's own EHLO keywords, in the order they are listed."""
    keywords = ["PIPELINING", "8BITMIME"]
    if settings.databytes:
        keywords.append(f"SIZE {settings.databytes}")
    keywords += ["ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"]
    if settings.binarymime:
        keywords.append("BINARYMIME")
    keywords.append("DSN")
    limits = [f"RCPTMAX={settings.max_recipients}"] if settings.max_recipients else []
    if settings.max_messages:
        limits.append(f"MAILMAX={settings.max_messages}")
    if limits:
        keywords.append("LIMITS " + " ".join(limits))
    if connection.tls is not None:
        keywords.append("REQUIRETLS")
    return keywords


#: no MAIL/RCPT parameter offered by a plugin (one shared object)
NO_PARAMETERS: frozenset[str] = frozenset()


def extension_names(lines: Collection[str]) -> frozenset[str]:
    """The keywords (lower-cased) of EHLO lines such as ``XFOO arg``: the parameter names plugins offer."""
    if not lines:
        return NO_PARAMETERS  # shared: most sessions offer no plugin parameter, and a frozenset is 216 bytes
    return frozenset(line.split()[0].lower() for line in lines if line.split())


def _unknown(params: Mapping[str, str | None], known: frozenset[str], offered: frozenset[str]) -> None:
    for key in params:
        if key not in known and key not in offered:
            raise ParameterError(Reply(555, "5.5.4", f"Unsupported parameter {key.upper()}"))


def mail_options(params: Mapping[str, str | None], settings: Settings, connection: Connection,
                 offered: frozenset[str] = frozenset()) -> MailOptions:
    """Check MAIL's parameters (lower-cased keys); :class:`ParameterError` says how to refuse."""
    _unknown(params, MAIL_PARAMETERS, offered)
    size: int | None = None
    if "size" in params:
        text = params["size"] or ""
        if not text.isdigit() or len(text) > 20:
            raise ParameterError(Reply(501, "5.5.4", "Syntax error in SIZE parameter"))
        size = int(text)
        if settings.databytes and size > settings.databytes:
            raise ParameterError(Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"))
    body: str | None = None
    if "body" in params:
        body = (params["body"] or "").upper()
        if body not in _BODY_TYPES and not (body == "BINARYMIME" and settings.binarymime):
            raise ParameterError(Reply(501, "5.5.4", "Unknown BODY type"))
    for flag in ("smtputf8", "requiretls"):
        if params.get(flag) is not None:
            raise ParameterError(Reply(501, "5.5.4", f"{flag.upper()} takes no value"))
    requiretls = "requiretls" in params
    if requiretls and connection.tls is None:
        raise ParameterError(Reply(530, "5.7.10", "REQUIRETLS needs a TLS connection (RFC 8689)"))
    try:
        dsn = MessageDSN.from_params(params)
    except DSNError as err:
        raise ParameterError(Reply(501, "5.5.4", f"Syntax error in DSN parameter: {err}")) from None
    return MailOptions(size, body, dsn, requiretls)


def recipient_dsn(params: Mapping[str, str | None],
                  offered: frozenset[str] = frozenset()) -> RecipientDSN | None:
    """Check RCPT's parameters; the recipient's DSN request, or :class:`ParameterError`."""
    _unknown(params, RCPT_PARAMETERS, offered)
    try:
        return RecipientDSN.from_params(params)
    except DSNError as err:
        raise ParameterError(Reply(501, "5.5.4", f"Syntax error in DSN parameter: {err}")) from None
