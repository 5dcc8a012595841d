"""auth/imap: check SMTP AUTH logins by logging in to an IMAP server.

For each PLAIN or LOGIN attempt the plugin connects to the IMAP server,
sends ``LOGIN`` with the client's user name and password, and logs out
again: a tagged OK means the password is right (235), NO a wrong password
(535). A server that cannot be reached, or a timeout, is a temporary
failure (454). Uses Twisted's IMAP4 client; nothing blocks.

CRAM-MD5 is not possible (the IMAP server wants the clear password).

Arguments: ``HOST [PORT] [imaps]``; PORT defaults to 143 (993 with
``imaps``, which verifies the server's certificate for HOST); ``port N``
works too. Without TLS,
keep the IMAP server on the same host or a trusted network.

config/plugins::

    auth/imap 127.0.0.1 143
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.mail import imap4

from qptwisted import DENY, DENYSOFT, LOGERROR, OK, HookAnswer, Plugin, Transaction, arg


class _Client(imap4.IMAP4Client):
    def __init__(self) -> None:
        super().__init__()
        self.greeted: Deferred[Any] = Deferred()
        self.gone: Deferred[None] = Deferred()

    def serverGreeting(self, caps: Any) -> None:
        if not self.greeted.called:
            self.greeted.callback(caps)

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        if not self.greeted.called:
            self.greeted.errback(reason)
        if not self.gone.called:
            self.gone.callback(None)


class IMAPAuth(Plugin):
    """SMTP AUTH by IMAP LOGIN."""

    name = "auth/imap"
    timeout = 30.0
    host: str = arg.str(help="the IMAP server", positional=True)
    port: int = arg.int(0, "its port (0: 143, or 993 with imaps)", positional=True)
    imaps: bool = arg.flag("TLS from the start, with the server's certificate checked for HOST")

    def register(self, *args: str) -> None:
        """Register the login hooks."""
        if not self.port:
            self.port = 993 if self.imaps else 143
        self.register_hook("auth_plain", self.check)
        self.register_hook("auth_login", self.check)

    async def check(self, transaction: Transaction, mechanism: str, user: str, password: str | None,
                    digest: str | None, ticket: str | None) -> HookAnswer:
        if password is None:
            return None
        from twisted.internet import reactor

        endpoint: Any = HostnameEndpoint(reactor, self.host, self.port, timeout=self.timeout)
        if self.imaps:
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = wrapClientTLS(optionsForClientTLS(self.host), endpoint)
        client = _Client()
        try:
            await connectProtocol(endpoint, client)
            await client.greeted
        except Exception as err:
            self.log(LOGERROR, f"cannot reach IMAP server {self.host}:{self.port}: {err}")
            if client.transport is not None:
                client.transport.loseConnection()
            return DENYSOFT, "authentication service unavailable"
        try:
            await client.login(user.encode(), password.encode())
        except imap4.IMAP4Exception:
            result: HookAnswer = (DENY, "wrong user or password")
        except Exception as err:
            self.log(LOGERROR, f"IMAP server {self.host}:{self.port} failed: {err}")
            result = (DENYSOFT, "authentication service unavailable")
        else:
            result = OK
        try:
            if client.transport is not None:
                client.transport.loseConnection()
        finally:
            await client.gone
        return result
