"""auth/checkpassword: check SMTP AUTH logins with a DJB checkpassword program.

Runs ``PROGRAM TRUE`` for each PLAIN or LOGIN attempt and writes
``user\\0password\\0timestamp\\0`` to its file descriptor 3, as the
checkpassword interface (https://cr.yp.to/checkpwd/interface.html) says.
Exit status 0 means the password is right, 1 a wrong password and 111 (or
any other status) a temporary failure (454). The program runs as a child
process through the reactor, so the server never blocks on it; a program
that hangs is killed after the plugin timeout (30 s).

CRAM-MD5 is not possible through this interface.

Arguments (qpsmtpd's syntax): ``checkpw PROGRAM true TRUE``; ``TRUE``
defaults to ``/bin/true``. Without arguments the config file
``smtpauth-checkpassword`` holds ``PROGRAM [TRUE]``.

config/plugins::

    auth/checkpassword checkpw /usr/local/bin/checkpassword true /bin/true
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from qptwisted import (
    DENY,
    DENYSOFT,
    LOGERROR,
    OK,
    ArgumentError,
    ConfigError,
    HookAnswer,
    Plugin,
    Transaction,
    arg,
)


class _Checker(ProcessProtocol):
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.done: Deferred[int] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[int]) -> None:
        try:
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        except Exception:  # already gone
            pass

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.writeToChild(3, self.payload)
        transport.closeChildFD(3)
        transport.closeStdin()

    def processEnded(self, reason: Failure) -> None:
        if not self.done.called:
            code = getattr(reason.value, "exitCode", None)
            self.done.callback(111 if code is None else int(code))


class CheckPassword(Plugin):
    """SMTP AUTH through an external checkpassword program."""

    name = "auth/checkpassword"
    timeout = 30.0
    checkpw: str | None = arg.str(None, "the checkpassword program (default: config smtpauth-checkpassword)")
    true: str | None = arg.str(None, "the program it runs on success (default /bin/true)")

    def register(self, *args: str) -> None:
        """Take the programs from the arguments or ``smtpauth-checkpassword``."""
        if self.checkpw is None and self.true is not None:
            raise ArgumentError(f"plugin {self.plugin_name}: argument checkpw: is required with true "
                                "(checkpw PROGRAM [true TRUE])")
        if self.checkpw is None:
            words = (self.config("smtpauth-checkpassword") or "").split()
            if not words:
                raise ConfigError("auth/checkpassword: no program (arguments or smtpauth-checkpassword)")
            self.checkpw, self.true = words[0], words[1] if len(words) > 1 else None
        self.program = self.checkpw
        self.true = self.true or "/bin/true"
        self.register_hook("auth_plain", self.check)
        self.register_hook("auth_login", self.check)

    def check(self, transaction: Transaction, mechanism: str, user: str, password: str | None,
              digest: str | None, ticket: str | None) -> HookAnswer:
        if password is None:
            return None
        from twisted.internet import reactor

        payload = b"%s\0%s\0%d\0" % (user.encode(), password.encode(), int(time.time()))
        checker = _Checker(payload)
        try:
            reactor.spawnProcess(checker, self.program, [self.program, self.true], env={},  # type: ignore
                                 childFDs={0: "w", 1: "r", 2: "r", 3: "w"})
        except OSError as err:
            self.log(LOGERROR, f"cannot run {self.program}: {err}")
            return DENYSOFT, "authentication service unavailable"

        def decided(status: int) -> HookAnswer:
            if status == 0:
                return OK
            if status == 1:
                return DENY, "wrong password"
            self.log(LOGERROR, f"{self.program} exited with status {status}")
            return DENYSOFT, "authentication service unavailable"

        return checker.done.addCallback(decided)
