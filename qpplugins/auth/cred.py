"""auth/cred: check SMTP AUTH logins through a ``twisted.cred`` Portal.

For applications that embed qptwisted: hand the service a Portal as the
resource ``portal`` (``QPSMTPDService(config, resources={"portal": portal})``;
``portal:NAME`` for a named one), or register it under a name before the
plugins load; every PLAIN or LOGIN attempt becomes
``UsernamePassword`` credentials (CRAM-MD5 becomes ``CramMD5Credentials``,
offered only when the portal has a checker for ``IUsernameHashedPassword``).
The plugin asks the portal for the avatar interface
``qptwisted.lib.sasl.ISMTPAuthenticatedUser``: a successful login is 235,
``UnauthorizedLogin`` is 535, any other error a temporary failure (454).
``qptwisted.lib.sasl.simple_portal(*checkers)`` builds a portal whose realm grants
that interface::

    from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
    from qptwisted.lib.sasl import register_portal, simple_portal

    register_portal(simple_portal(my_checker), "default")

Arguments: ``[NAME]``, the name the portal was registered under (``default``).

config/plugins::

    auth/cred default
"""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import CramMD5Credentials, IUsernameHashedPassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.python.failure import Failure

from qptwisted import DENY, DENYSOFT, LOGERROR, OK, ConfigError, HookAnswer, Plugin, Transaction, arg
from qptwisted.lib.sasl import ISMTPAuthenticatedUser, get_portal


class CredAuth(Plugin):
    """SMTP AUTH against an application's twisted.cred portal."""

    name = "auth/cred"
    portal_name: str = arg.str("default", "the name the portal was registered under", positional=True)

    def register(self, *args: str) -> None:
        """Find the portal: the engine's resource ``portal`` (``portal:NAME``), else the registered one."""
        key = "portal" if self.portal_name == "default" else f"portal:{self.portal_name}"
        portal = self.engine.resources.get(key) or get_portal(self.portal_name)
        if portal is None:
            raise ConfigError(f"auth/cred: no portal {self.portal_name!r}: hand one over as the resource "
                              f"{key!r} or with qptwisted.lib.sasl.register_portal")
        self.portal = portal
        self.register_hook("auth_plain", self.check)
        self.register_hook("auth_login", self.check)
        if IUsernameHashedPassword in portal.listCredentialsInterfaces():
            self.register_hook("auth_cram_md5", self.check)

    def check(self, transaction: Transaction, mechanism: str, user: str, password: str | None,
              digest: str | None, ticket: str | None) -> HookAnswer:
        credentials: Any
        if password is not None:
            credentials = UsernamePassword(user.encode(), password.encode())
        elif digest and ticket:
            credentials = CramMD5Credentials()
            credentials.username = user.encode()
            credentials.challenge = ticket.encode()
            credentials.response = digest.encode()
        else:
            return None

        def ok(_: Any) -> HookAnswer:
            _, _, logout = _
            logout()
            return OK

        def failed(failure: Failure) -> HookAnswer:
            if failure.check(UnauthorizedLogin):
                return DENY, "wrong user or password"
            if failure.check(UnhandledCredentials):
                return None
            self.log(LOGERROR, f"portal {self.portal_name!r} failed: {failure.getErrorMessage()}")
            return DENYSOFT, "authentication service unavailable"

        return self.portal.login(credentials, None, ISMTPAuthenticatedUser).addCallbacks(ok, failed)
