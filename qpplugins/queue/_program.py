"""Queue plugins that hand each message to a local program (qmail-queue, sendmail, exim).

:class:`ProgramQueue` runs the program with :func:`qptwisted.lib.program.run_program`
(the reactor never waits on it): the message and anything else go to the
program's input descriptors, what it prints is collected, and it is killed
after ``timeout=S`` seconds on the engine clock. Subclasses say which
program, which arguments and inputs, and what its exit code means.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred

from qptwisted import DENY, DENYSOFT, LOGERROR, LOGINFO, OK, Plugin, Transaction, arg
from qptwisted.lib.program import ProgramNotStarted, ProgramResult, run_program


class ProgramQueue(Plugin):
    """Base of the queue plugins that run a program per message.

    Subclasses set :attr:`default_path`, implement :meth:`arguments`,
    :meth:`inputs` and :meth:`answer`, and declare the arguments they take
    besides ``[PATH] [timeout=S]``.
    """

    #: the program when no ``PATH`` argument is given (see :meth:`default_program`)
    default_path = ""
    #: what each non-zero exit code means, for the log and the reply
    exit_codes: dict[int, str] = {}
    #: the exit codes that refuse the message for good (552); any other is 452
    permanent: frozenset[int] = frozenset()
    #: who refused, in the 552 text
    refuser = "the queue"
    #: the reactor used to spawn (tests may replace it); timers use the engine clock
    reactor: Any = None

    path: str | None = arg.str(None, "the program (default: the plugin's usual one)", positional=True)
    process_timeout: float = arg.duration(600, "kill a program that has not finished after this long",
                                          aliases=("timeout",))

    def register(self, *args: str) -> None:
        """Find the program."""
        self.program = self.path or self.default_program()

    def default_program(self) -> str:
        """The program to run when the configuration names none."""
        return self.default_path

    def arguments(self, transaction: Transaction) -> list[str]:
        """The program's arguments after its name."""
        return []

    def inputs(self, transaction: Transaction) -> dict[int, Iterable[bytes]]:
        """What to write to which descriptor of the program, in order."""
        return {0: transaction.iter_message()}

    def meaning(self, result: ProgramResult) -> str:
        """What a failed run means, for the log and the reply."""
        return "killed" if result.code is None else self.exit_codes.get(result.code, "unknown error")

    def is_permanent(self, result: ProgramResult) -> bool:
        """Whether a failed run refuses the message for good (552) rather than for now (452)."""
        return result.code in self.permanent

    def answer(self, transaction: Transaction, result: ProgramResult) -> tuple[Any, str]:
        """0 is 250; a permanent failure is 552; anything else (a kill, the timeout) is 452."""
        said = f": {result.output}" if result.output else ""
        if result.code == 0:
            self.log(LOGINFO, f"{self.program} queued the message{said}")
            return OK, f"Queued! {transaction.message_id or ''}".rstrip()
        reason = self.meaning(result)
        how = "was killed" if result.code is None else f"exited with {result.code}"
        self.log(LOGERROR, f"{self.program} {how} ({reason}){said}")
        if self.is_permanent(result):
            return DENY, f"Message refused by {self.refuser}: {reason} (#5.3.0)"
        return DENYSOFT, f"Queue error: {reason}, try again later (#4.3.0)"

    def hook_queue(self, transaction: Transaction) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.deliver(transaction))

    async def deliver(self, transaction: Transaction) -> tuple[Any, str]:
        """Run the program for ``transaction`` and answer from its exit code."""
        result = await self.run(transaction)
        if result is None:
            return DENYSOFT, "Queue program unavailable, try again later (#4.3.0)"
        return self.answer(transaction, result)

    async def run(self, transaction: Transaction) -> ProgramResult | None:
        """Run the program; ``None`` if it could not be started (logged)."""
        argv = [self.program, *self.arguments(transaction)]
        try:
            return await run_program(self.clock, argv, self.inputs(transaction), self.process_timeout,
                                     reactor=self.reactor)
        except ProgramNotStarted as err:
            self.log(LOGERROR, str(err))
            return None
