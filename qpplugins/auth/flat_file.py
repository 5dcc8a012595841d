"""auth/flat_file: check SMTP AUTH logins against a ``user@domain:secret`` file.

Each line of config file ``flat_auth_pw`` is ``user@domain:secret``
(``#`` comments allowed; user names match case-insensitively). The secret
is either the clear password, or a hash made with a well-kept library:

- bcrypt (``$2b$...``)::

      python -c 'import bcrypt, getpass
      print(bcrypt.hashpw(getpass.getpass().encode(), bcrypt.gensalt()).decode())'

- argon2 (``$argon2id$...``), when ``argon2-cffi`` is installed.

Hashes are verified on the engine's thread pool, never on the reactor.

The trade-off: PLAIN and LOGIN work with every entry, but CRAM-MD5 needs the
clear secret on the server (the client proves knowledge of it with an HMAC),
so CRAM-MD5 is offered only when some entry is clear text, and hashed entries
can only log in with PLAIN or LOGIN. Prefer hashed secrets plus TLS
(``tls_before_auth``, the default) over CRAM-MD5 with clear secrets.

Arguments: none. The file is read at (re)load; send SIGHUP after editing it.

config/plugins::

    auth/flat_file
"""

from __future__ import annotations

import hmac
from typing import Any

from qptwisted import DECLINED, DENY, LOGINFO, OK, ConfigError, HookAnswer, Plugin, Transaction
from qptwisted.lib.sasl import cram_md5_matches


def _verify_hash(secret: str, password: str) -> bool:
    if secret.startswith(("$2a$", "$2b$", "$2y$")):
        import bcrypt

        try:
            return bool(bcrypt.checkpw(password.encode(), secret.encode()))
        except ValueError:
            return False
    from argon2 import PasswordHasher
    from argon2.exceptions import Argon2Error, InvalidHashError

    try:
        return bool(PasswordHasher().verify(secret, password))
    except (Argon2Error, InvalidHashError):
        return False


def is_hashed(secret: str) -> bool:
    """True for a bcrypt or argon2 hash, False for a clear secret."""
    return secret.startswith(("$2a$", "$2b$", "$2y$", "$argon2"))


class FlatFile(Plugin):
    """SMTP AUTH against config/flat_auth_pw."""

    name = "auth/flat_file"
    strict_arguments = True

    def register(self, *args: str) -> None:
        """Read the password file and register the hooks it can serve."""
        self.users: dict[str, str] = {}
        for line in self.config_list("flat_auth_pw"):
            user, colon, secret = line.strip().partition(":")
            if not colon or not user or not secret:
                raise ConfigError(f"auth/flat_file: flat_auth_pw: malformed entry for {user or '?'!r}")
            if secret.startswith("$argon2"):
                try:
                    import argon2  # noqa: F401
                except ImportError:
                    raise ConfigError("auth/flat_file: argon2 hashes need the argon2-cffi package") from None
            self.users[user.lower()] = secret
        self.register_hook("auth_plain", self.check)
        self.register_hook("auth_login", self.check)
        if any(not is_hashed(secret) for secret in self.users.values()):
            self.register_hook("auth_cram_md5", self.check)

    def check(self, transaction: Transaction, mechanism: str, user: str, password: str | None,
              digest: str | None, ticket: str | None) -> HookAnswer:
        secret = self.users.get(user.lower())
        if secret is None:
            return DENY, "no such user"
        if mechanism == "cram-md5":
            if is_hashed(secret):
                self.log(LOGINFO, f"CRAM-MD5 for {user} needs a clear secret; the stored one is hashed")
                return DENY, "CRAM-MD5 not available for this user"
            return OK if digest and ticket and cram_md5_matches(secret, ticket, digest) \
                else (DENY, "wrong password")
        if password is None:
            return DECLINED
        if not is_hashed(secret):
            return OK if hmac.compare_digest(secret.encode(), password.encode()) else (DENY, "wrong password")

        def decided(matches: bool) -> Any:
            return OK if matches else (DENY, "wrong password")

        return self.defer_to_thread(_verify_hash, secret, password).addCallback(decided)
