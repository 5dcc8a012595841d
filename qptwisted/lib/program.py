"""Running a local program for a plugin without blocking the reactor (queue programs, virus scanners).

:func:`run_program` starts the program with ``reactor.spawnProcess``, writes
what it is given to the program's input descriptors (the message on 0, an
envelope on 1 for qmail-queue), collects what it prints on 1 and 2 (up to
:data:`OUTPUT_LIMIT` bytes), and kills it once ``timeout`` seconds have passed
on the plugin's clock. It answers how the program ended::

    try:
        result = await run_program(self.clock, ["/usr/bin/clamscan", "-"],
                                   {0: transaction.iter_message()}, timeout=60)
    except ProgramNotStarted as err:
        ...                             # str(err) says why
    if result.code == 0:
        ...                             # result.output is what it printed

Queue plugins build on it through ``qpplugins/queue/_program.py``; the virus
scanners call it directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from twisted.internet import error, protocol
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

#: how much of a program's output is kept (for the log and for parsing)
OUTPUT_LIMIT = 4096


class ProgramResult(NamedTuple):
    """How a program ended: its exit code (``None`` if a signal killed it) and its output."""

    code: int | None
    output: str


class ProgramNotStarted(Exception):
    """The program could not be started (no such file, not executable ...); the message says why."""


class _ProgramProcess(protocol.ProcessProtocol):
    """Feeds each input descriptor in turn, collects output, reports the exit code."""

    def __init__(self, inputs: Mapping[int, Iterable[bytes]]) -> None:
        self.inputs = inputs
        self.output = b""
        self.done: Deferred[int | None] = Deferred()

    def connectionMade(self) -> None:
        transport: Any = self.transport
        try:
            for fd, chunks in self.inputs.items():
                for chunk in chunks:
                    transport.writeToChild(fd, chunk)
                transport.closeChildFD(fd)
        except Exception:
            transport.signalProcess("KILL")

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if len(self.output) < OUTPUT_LIMIT:
            self.output += data

    def processEnded(self, reason: Failure) -> None:
        # ProcessDone carries 0, ProcessTerminated the code, or None when a signal killed it
        self.done.callback(getattr(reason.value, "exitCode", None))


async def run_program(clock: IReactorTime, argv: Sequence[str], inputs: Mapping[int, Iterable[bytes]],
                      timeout: float, reactor: Any = None,
                      env: Mapping[str, str] | None = None) -> ProgramResult:
    """Run ``argv``, feed ``inputs`` ({descriptor: chunks}), and wait until it ends or ``timeout`` passes.

    A program still running after ``timeout`` seconds on ``clock`` is killed
    (its result has code ``None``); cancelling the wait kills it too.
    ``reactor`` spawns (default: the global reactor); ``env`` defaults to
    this process's environment. Raises :class:`ProgramNotStarted` when the
    program cannot be started.
    """
    if reactor is None:
        from twisted.internet import reactor
    child_fds: dict[int, int | str] = {fd: "w" for fd in inputs}
    for fd in (1, 2):
        child_fds.setdefault(fd, "r")
    process = _ProgramProcess(inputs)
    try:
        transport = reactor.spawnProcess(process, argv[0], list(argv),
                                         env=dict(os.environ if env is None else env), childFDs=child_fds)
    except OSError as err:
        raise ProgramNotStarted(f"cannot start {argv[0]}: {err}") from err
    timer = clock.callLater(timeout, _kill, transport)
    try:
        code = await process.done
    except CancelledError:
        _kill(transport)
        raise
    finally:
        if timer.active():
            timer.cancel()
    return ProgramResult(code, process.output.decode("utf-8", "replace").strip())


def _kill(transport: Any) -> None:
    try:
        transport.signalProcess("KILL")
    except error.ProcessExitedAlready:
        pass


__all__ = ["OUTPUT_LIMIT", "ProgramNotStarted", "ProgramResult", "run_program"]
