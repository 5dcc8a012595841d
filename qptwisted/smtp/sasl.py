"""SMTP AUTH (RFC 4954) in the engine: SASL PLAIN, LOGIN and CRAM-MD5.

The engine speaks the SASL dialogue; plugins only check credentials, on
qpsmtpd's hooks. For mechanism ``M`` the chain ``auth_<m>`` runs first
(``auth_plain``, ``auth_login``, ``auth_cram_md5``), then, if every plugin
declined, the generic ``auth`` chain. Each hook is called as::

    hook(transaction, mechanism, user, password, password_hash, ticket)

``password`` is the clear password (PLAIN, LOGIN) or None; for CRAM-MD5
``password_hash`` is the client's hex digest and ``ticket`` the challenge.
OK means success (235), DENY or DECLINED everywhere mean failure (535),
DENYSOFT a temporary failure (454). ``auth_parse`` may return a parser for
the AUTH arguments, as ``helo_parse`` does for HELO.

AUTH is offered (and accepted) only after EHLO, when some auth hook is
registered, and, while config ``tls_before_auth`` is on (the default), only
on TLS connections. Config ``auth_max_failures`` (default 3) failures on one
connection end it with 421. Credentials are never logged unless config
``auth_debug_credentials`` is 1.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from qptwisted.core.codes import DECLINED, DENYSOFT, DONE, LOGDEBUG, LOGINFO, LOGWARN, OK, HookResult

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine
    from qptwisted.mail.connection import Connection
    from qptwisted.mail.transaction import Transaction

Step = Deferred[Any] | None


class Session(Protocol):
    """What AUTH needs of the SMTP session (which imports this module, so it is described here)."""

    engine: Engine
    connection: Connection
    transaction: Transaction

    def respond(self, code: int, message: str, enhanced: str | None = "") -> None:
        """Send a reply."""

    def disconnect(self) -> None:
        """Close after the replies."""

    def expect_line(self, handler: Callable[[str], Step]) -> None:
        """Give the next line to ``handler``."""

    def unrecognized(self, verb: str, rest: str) -> Step:
        """Answer as for an unknown verb."""

    def _run(self, hook: str, then: Callable[[HookResult], Step], *args: Any, **kwargs: Any) -> Step: ...

    def _parser(self, hook: str) -> Callable[[str], Any] | None: ...

#: mechanisms in the order EHLO lists them
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
_HOOK = {"PLAIN": "auth_plain", "LOGIN": "auth_login", "CRAM-MD5": "auth_cram_md5"}
_USERNAME = base64.b64encode(b"Username:").decode()
_PASSWORD = base64.b64encode(b"Password:").decode()


def mechanisms(session: Session) -> list[str]:
    """The mechanisms some plugin can check (empty: AUTH is not offered)."""
    hooks = session.engine.hooks
    if hooks.has("auth"):
        return list(MECHANISMS)
    return [m for m in MECHANISMS if hooks.has(_HOOK[m])]


def tls_required(session: Session) -> bool:
    """True while ``tls_before_auth`` keeps AUTH away from this (plaintext) connection."""
    return session.connection.tls is None and session.engine.config.get_bool("tls_before_auth", True)


def capabilities(session: Session) -> list[str]:
    """The EHLO line for AUTH, if AUTH is offered here and now."""
    offered = mechanisms(session)
    if not offered or tls_required(session) or session.connection.auth_user:
        return []
    return ["AUTH " + " ".join(offered)]


def auth_command(session: Session, rest: str) -> Step:
    """Run the AUTH command: checks, then the mechanism's dialogue."""
    offered = mechanisms(session)
    if not offered:
        return session.unrecognized("AUTH", rest)
    connection = session.connection
    if connection.hello != "ehlo":
        session.respond(503, "AUTH only after EHLO", "5.5.1")
        return None
    if tls_required(session):
        session.respond(503, "SSL/TLS required before AUTH: issue STARTTLS first", "5.7.0")
        return None
    if connection.auth_user:
        session.respond(503, "but you already said AUTH ...", "5.5.1")
        return None
    if session.transaction.sender is not None:
        session.respond(503, "AUTH not permitted during a mail transaction", "5.5.1")
        return None
    parser = session._parser("auth_parse")
    words = list(parser(rest)) if parser else rest.split()
    mechanism = words[0].upper() if words else ""
    if mechanism not in offered:
        session.respond(504, f"Unimplemented authentication mechanism: {mechanism or '(none)'}", "5.5.4")
        return None
    initial = words[1] if len(words) > 1 else None
    return _Exchange(session, mechanism).begin(initial)


class _Exchange:
    """One SASL exchange on one connection."""

    def __init__(self, session: Session, mechanism: str) -> None:
        self.session = session
        self.mechanism = mechanism

    # -- helpers ---------------------------------------------------------------
    def _ask(self, challenge: str, then: Callable[[bytes], Step]) -> Step:
        self.session.respond(334, challenge, None)
        self.session.expect_line(lambda line: self._answer(line, then))
        return None

    def _answer(self, line: str, then: Callable[[bytes], Step]) -> Step:
        line = line.strip()
        if line == "*":
            self.session.respond(501, "Authentication cancelled", "5.0.0")
            return None
        decoded = _decode(line)
        if decoded is None:
            self.session.respond(501, "Cannot decode response", "5.5.2")
            return None
        return then(decoded)

    # -- mechanisms --------------------------------------------------------------
    def begin(self, initial: str | None) -> Step:
        """Start the dialogue, with the initial response if the client sent one."""
        if self.mechanism == "PLAIN":
            if initial is None:
                return self._ask("", self._plain)
            return self._answer(initial, self._plain)
        if self.mechanism == "LOGIN":
            if initial is None:
                return self._ask(_USERNAME, self._login_user)
            return self._answer(initial, self._login_user)
        if initial is not None:
            self.session.respond(501, "CRAM-MD5 takes no initial response", "5.5.4")
            return None
        engine = self.session.engine
        self.ticket = f"<{int.from_bytes(os.urandom(8), 'big')}.{int(time.time())}@{engine.settings.me}>"
        return self._ask(base64.b64encode(self.ticket.encode()).decode(), self._cram)

    def _plain(self, data: bytes) -> Step:
        parts = data.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            self.session.respond(501, "Malformed PLAIN response", "5.5.2")
            return None
        authzid, user, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid != user:
            return self._failed(user, HookResult(DECLINED, f"may not act as {authzid}"))
        return self._check(user, password, None, None)

    def _login_user(self, data: bytes) -> Step:
        user = data.decode("utf-8", "replace")
        if not user:
            self.session.respond(501, "Empty user name", "5.5.2")
            return None
        return self._ask(_PASSWORD, lambda pw: self._check(user, pw.decode("utf-8", "replace"), None, None))

    def _cram(self, data: bytes) -> Step:
        user, _, digest = data.decode("utf-8", "replace").rpartition(" ")
        if not user or len(digest) != 32:
            self.session.respond(501, "Malformed CRAM-MD5 response", "5.5.2")
            return None
        return self._check(user, None, digest.lower(), self.ticket)

    # -- checking ------------------------------------------------------------------
    def _check(self, user: str, password: str | None, digest: str | None, ticket: str | None) -> Step:
        session = self.session
        if session.engine.config.get_bool("auth_debug_credentials", False):
            session.engine.log(LOGDEBUG, f"auth debug: mechanism={self.mechanism} user={user!r} "
                               f"password={password!r} hash={digest!r}", transaction=session.transaction)
        args = (self.mechanism.lower(), user, password, digest, ticket)

        def generic(result: HookResult) -> Step:
            if result.code is not DECLINED:
                return self._decided(user, result)
            return session._run("auth", lambda r: self._decided(user, r), *args)

        return session._run(_HOOK[self.mechanism], generic, *args)

    def _decided(self, user: str, result: HookResult) -> Step:
        session = self.session
        if result.code is OK:
            connection = session.connection
            connection.auth_user = user
            connection.auth_mechanism = self.mechanism
            connection.relay_client = True
            connection.notes.pop("naughty", None)
            session.engine.log(LOGINFO, f"auth success: mechanism={self.mechanism} user={user} "
                               f"ip={connection.remote_ip} by {result.plugin}",
                               transaction=session.transaction)
            extra = f" - {result.message}" if result.message else ""
            session.respond(235, f"{self.mechanism} authentication successful for {user}{extra}", "2.7.0")
            return None
        if result.code is DENYSOFT:
            session.engine.log(LOGWARN, f"auth temporary failure: mechanism={self.mechanism} user={user} "
                               f"ip={session.connection.remote_ip}", transaction=session.transaction)
            session.respond(454, "Temporary authentication failure, try again later", "4.7.0")
            return None
        if result.code is DONE:
            return None
        return self._failed(user, result)

    def _failed(self, user: str, result: HookResult) -> Step:
        session = self.session
        connection = session.connection
        failures = connection.notes["auth_failures"] = connection.notes.get("auth_failures", 0) + 1
        why = f" ({result.message})" if result.message else ""
        session.engine.log(LOGWARN, f"auth failed: mechanism={self.mechanism} user={user} "
                           f"ip={connection.remote_ip}{why}", transaction=session.transaction)
        limit = session.engine.config.get_int("auth_max_failures", 3)
        if limit and failures >= limit:
            session.respond(421, "Too many authentication failures, closing connection", "4.7.0")
            session.disconnect()
            return None
        session.respond(535, f"{self.mechanism} authentication failed for {user}", "5.7.8")
        return None


def _decode(text: str) -> bytes | None:
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
