"""auth/ldap_bind: check SMTP AUTH logins by binding to an LDAP directory as the user.

qpsmtpd's ``auth_ldap_bind``. For each PLAIN or LOGIN attempt the plugin
searches the directory under ``ldap_base`` for the one entry whose
``ldap_auth_filter_attr`` (default ``uid``) equals the user name (as
``ldap_bind_dn`` when given, else anonymously), then binds as that entry's
DN with the client's password: a successful bind is 235, a wrong password
or an unknown user 535, and a directory that cannot be reached or answers
with an error 454 (try again later). The user name is escaped for the
search filter (RFC 4515), so ``*`` or ``)(`` in a name never widen the
search; an empty password is refused before anything is asked (an LDAP
bind with an empty password is an anonymous bind, which always succeeds).

The LDAP client is ``ldap3`` (pure Python); its blocking calls run on the
engine's thread pool, never on the reactor thread. CRAM-MD5 is not possible
(the directory wants the clear password).

Settings are ``name value`` pairs on the ``config/plugins`` line; each may
also be a line ``name value`` in the config file ``ldap`` (qpsmtpd's way),
and the plugin line wins:

``ldap_host HOST``
    the directory server (required).
``ldap_port N``
    its port (default 389, or 636 with ``ldap_tls ldaps``).
``ldap_base DN``
    where to search for users (required).
``ldap_auth_filter_attr ATTR``
    the attribute holding the login name (default ``uid``; ``mail`` for
    whole addresses).
``ldap_user local|address``
    search for the part before ``@`` (default, as qpsmtpd does) or the
    whole address.
``ldap_bind_dn DN`` and ``ldap_bind_password SECRET``
    the account that searches (default: anonymous).
``ldap_timeout N``
    seconds to connect and for each answer (default 5).
``ldap_tls none|starttls|ldaps``
    StartTLS on the plain port, or TLS from the start (default ``none``;
    keep the directory on the same host or a trusted network without it).
``ldap_cafile PATH``
    the CA certificates that the server's certificate is checked against
    (default: the system's); ``ldap_verify 0`` does not check it.

config/plugins::

    auth/ldap_bind ldap_host 127.0.0.1 ldap_base ou=people,dc=example,dc=org ldap_tls starttls
"""

from __future__ import annotations

import math
import ssl
from enum import Enum
from pathlib import Path
from typing import Any

from qptwisted import (
    DENY,
    DENYSOFT,
    LOGERROR,
    LOGINFO,
    OK,
    ArgumentError,
    HookAnswer,
    Plugin,
    Transaction,
    arg,
)

#: the result code of a bind refused for its credentials (RFC 4511 4.1.9)
INVALID_CREDENTIALS = 49
WRONG = "wrong user or password"
UNAVAILABLE = "authentication service unavailable"


class Verdict(Enum):
    """What the directory said about one login."""

    OK = "ok"
    WRONG = "wrong"
    UNAVAILABLE = "unavailable"


class LDAPBind(Plugin):
    """SMTP AUTH by LDAP search and bind."""

    name = "auth/ldap_bind"
    timeout = 60.0
    ldap_host: str | None = arg.str(None, "the directory server (required)")
    ldap_port: int | None = arg.int(None, "its port (default 389, or 636 with ldap_tls ldaps)")
    ldap_base: str | None = arg.str(None, "the DN under which users are searched (required)")
    ldap_auth_filter_attr: str | None = arg.str(None, "the attribute holding the login name (default uid)")
    ldap_user: str | None = arg.choice(("local", "address"), None, "search for the local part (default) or "
                                       "the whole address")
    ldap_bind_dn: str | None = arg.str(None, "the DN that searches (default: anonymous)")
    ldap_bind_password: str | None = arg.str(None, "its password")
    ldap_timeout: float | None = arg.duration(None, "seconds to connect and for each answer (default 5)")
    ldap_tls: str | None = arg.choice(("none", "starttls", "ldaps"), None, "StartTLS, TLS from the start, "
                                      "or none (default)")
    ldap_cafile: Path | None = arg.path(None, "CA certificates for the server's certificate (default: the "
                                        "system's)")
    ldap_verify: bool | None = arg.bool(None, "check the server's certificate (default 1)")

    def register(self, *args: str) -> None:
        """Merge the ``ldap`` config file under the line's settings, check them, register the hooks."""
        try:
            import ldap3  # noqa: F401
        except ImportError:
            raise ArgumentError(f"plugin {self.plugin_name} needs the ldap3 package "
                                "(pip install 'qptwisted[ldap]')") from None
        from_file: dict[str, str] = {}
        for line in self.config_list("ldap"):
            key, _, value = line.strip().partition(" ")
            if key and value.strip():
                from_file[key.lower()] = value.strip()
        known = {"ldap_host", "ldap_port", "ldap_base", "ldap_auth_filter_attr", "ldap_user", "ldap_bind_dn",
                 "ldap_bind_password", "ldap_timeout", "ldap_tls", "ldap_cafile", "ldap_verify"}
        unknown = sorted(set(from_file) - known)
        if unknown:
            raise ArgumentError(f"plugin {self.plugin_name}: config file ldap: unknown setting "
                                f"{', '.join(unknown)}")
        self.host = self.ldap_host or from_file.get("ldap_host")
        self.base = self.ldap_base or from_file.get("ldap_base")
        if not self.host or not self.base:
            raise ArgumentError(f"plugin {self.plugin_name}: ldap_host and ldap_base are required (on the "
                                "plugin line or in config/ldap)")
        self.tls = (self.ldap_tls or from_file.get("ldap_tls", "none")).lower()
        if self.tls not in ("none", "starttls", "ldaps"):
            raise ArgumentError(f"plugin {self.plugin_name}: ldap_tls must be none, starttls or ldaps")
        try:
            self.port = self.ldap_port or int(from_file.get("ldap_port", 636 if self.tls == "ldaps" else 389))
            self.wait = self.ldap_timeout or float(from_file.get("ldap_timeout", 5))
        except ValueError as err:
            raise ArgumentError(f"plugin {self.plugin_name}: config file ldap: {err}") from None
        self.attribute = self.ldap_auth_filter_attr or from_file.get("ldap_auth_filter_attr", "uid")
        self.whole_address = (self.ldap_user or from_file.get("ldap_user", "local")) == "address"
        self.bind_dn = self.ldap_bind_dn or from_file.get("ldap_bind_dn")
        self.bind_password = self.ldap_bind_password or from_file.get("ldap_bind_password")
        cafile = self.ldap_cafile or (self.engine.config.resolve(from_file["ldap_cafile"])
                                      if "ldap_cafile" in from_file else None)
        verify = self.ldap_verify if self.ldap_verify is not None else \
            from_file.get("ldap_verify", "1").lower() not in ("0", "no", "off", "false")
        self.tls_settings = self._tls(cafile, verify)
        self.register_hook("auth_plain", self.check)
        self.register_hook("auth_login", self.check)

    def _tls(self, cafile: Path | None, verify: bool) -> Any:
        if self.tls == "none":
            return None
        import ldap3

        return ldap3.Tls(validate=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE,
                         ca_certs_file=str(cafile) if cafile else None)

    def check(self, transaction: Transaction, mechanism: str, user: str, password: str | None,
              digest: str | None, ticket: str | None) -> HookAnswer:
        if password is None:
            return None
        if not password or not user:
            self.log(LOGINFO, "fail: empty user name or password")
            return DENY, WRONG
        login = user if self.whole_address else user.split("@", 1)[0]
        return self.defer_to_thread(self.authenticate, login, password).addCallback(self._answer, user)

    def _answer(self, verdict: tuple[Verdict, str], user: str) -> HookAnswer:
        outcome, why = verdict
        if outcome is Verdict.OK:
            self.log(LOGINFO, f"pass: {user} bound as {why}")
            return OK
        if outcome is Verdict.WRONG:
            self.log(LOGINFO, f"fail: {user}: {why}")
            return DENY, WRONG
        self.log(LOGERROR, f"directory {self.host}:{self.port} failed: {why}")
        return DENYSOFT, UNAVAILABLE

    # -- on the thread pool ------------------------------------------------------
    def server(self) -> Any:
        """The ``ldap3.Server`` of the directory."""
        import ldap3

        return ldap3.Server(self.host, port=self.port, use_ssl=self.tls == "ldaps", tls=self.tls_settings,
                            connect_timeout=self.wait, get_info=ldap3.NONE)

    def _open(self, server: Any, user: str | None, password: str | None) -> Any:
        import ldap3

        connection = ldap3.Connection(server, user=user, password=password, read_only=True,
                                      receive_timeout=max(1, math.ceil(self.wait)), raise_exceptions=False)
        connection.open()
        if self.tls == "starttls" and not connection.start_tls():
            connection.unbind()
            raise ConnectionError(f"StartTLS failed: {connection.result}")
        return connection

    def authenticate(self, login: str, password: str) -> tuple[Verdict, str]:
        """Search the user's entry, bind as it (blocking: runs on the thread pool)."""
        from ldap3.core.exceptions import LDAPException
        from ldap3.utils.conv import escape_filter_chars

        try:
            server = self.server()
            searcher = self._open(server, self.bind_dn, self.bind_password)
            try:
                if self.bind_dn and not searcher.bind():
                    return Verdict.UNAVAILABLE, f"search account refused: {searcher.result['description']}"
                query = f"({self.attribute}={escape_filter_chars(login)})"
                if not searcher.search(self.base, query, attributes=[], size_limit=2,
                                       time_limit=int(self.wait) or 1) and searcher.result["result"] != 0:
                    return Verdict.UNAVAILABLE, f"search failed: {searcher.result['description']}"
                entries = [entry["dn"] for entry in searcher.response or ()
                           if entry.get("type") == "searchResEntry"]
            finally:
                searcher.unbind()
            if not entries:
                return Verdict.WRONG, "no such user"
            if len(entries) > 1:
                return Verdict.WRONG, f"{query} matches more than one entry under {self.base}"
            user = self._open(server, entries[0], password)
            try:
                if user.bind():
                    return Verdict.OK, entries[0]
                if user.result["result"] == INVALID_CREDENTIALS:
                    return Verdict.WRONG, "wrong password"
                return Verdict.UNAVAILABLE, f"bind failed: {user.result['description']}"
            finally:
                user.unbind()
        except (LDAPException, OSError) as err:
            return Verdict.UNAVAILABLE, f"{type(err).__name__}: {err}"
        except Exception as err:  # ldap3 lets some low-level errors through unwrapped
            return Verdict.UNAVAILABLE, f"{type(err).__name__}: {err}"
