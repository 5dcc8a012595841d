"""The hook chain runner: plugins in order, first non-DECLINED answer wins.

Synchronous answers take a fast path that creates no Deferred at all;
a plugin that returns a Deferred or is an ``async def`` suspends the chain,
bounded by its timeout on the engine's clock.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutine
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from qptwisted.core.codes import (
    DECLINED,
    DENY_CODES,
    DENYSOFT,
    LOGCRIT,
    LOGERROR,
    NO_ANSWER,
    HookResult,
    to_result,
)

if TYPE_CHECKING:
    from qptwisted.mail.transaction import Transaction

#: every hook the engine fires (qpsmtpd's names, ``-`` spelled ``_``)
HOOKS = frozenset("""
    logging config user_config pre_connection connect helo_parse ehlo_parse helo ehlo
    auth_parse auth_plain auth_login auth_cram_md5 auth mail_parse mail_pre mail
    rcpt_parse rcpt_pre rcpt data data_headers_end data_post_headers received_line
    data_post queue_pre queue queue_post reset_transaction vrfy noop help quit
    unrecognized_command disconnect post_connection deny ok
""".split())

#: hooks whose answers are not replies, so the deny/ok observers do not fire
_SILENT = frozenset("""
    logging config user_config deny ok reset_transaction disconnect post_connection
    queue_post data_post_headers
""".split())

LogFunction = Callable[..., None]


class Registration(NamedTuple):
    """One plugin method registered on one hook."""

    plugin: str
    function: Callable[..., Any]
    timeout: float


def hook_name(name: str) -> str:
    """The canonical spelling of a hook name: ``pre-connection`` -> ``pre_connection``."""
    return name.replace("-", "_")


class HookRunner:
    """Holds the registrations of every hook and runs their chains."""

    def __init__(self, clock: IReactorTime, log: LogFunction) -> None:
        self.clock = clock
        self.log = log
        self.chains: dict[str, list[Registration]] = {}
        self._observed = False
        #: the transaction whose hook is running now (loggers tag lines with its ids)
        self.current: Transaction | None = None

    def register(self, hook: str, plugin: str, function: Callable[..., Any],
                 timeout: float, unshift: bool = False) -> None:
        """Add ``function`` to ``hook``'s chain (first with ``unshift``)."""
        name = hook_name(hook)
        if name not in HOOKS:
            raise ValueError(f"{plugin}: invalid hook {hook!r}")
        chain = self.chains.setdefault(name, [])
        chain.insert(0 if unshift else len(chain), Registration(plugin, function, timeout))
        self._observed = bool(self.chains.get("deny") or self.chains.get("ok"))

    def has(self, hook: str) -> bool:
        """True if any plugin registered on ``hook``."""
        return hook in self.chains

    def run(self, hook: str, transaction: Transaction, *args: Any,
            **kwargs: Any) -> HookResult | Deferred[HookResult]:
        """Run ``hook``'s chain; a plain :class:`HookResult` when nothing was asynchronous."""
        chain = self.chains.get(hook)
        if not chain:
            return NO_ANSWER
        return self._run_from(hook, chain, 0, transaction, args, kwargs)

    def _run_from(self, hook: str, chain: list[Registration], start: int,
                  transaction: Transaction, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> HookResult | Deferred[HookResult]:
        for index in range(start, len(chain)):
            registration = chain[index]
            previous, self.current = self.current, transaction
            try:
                value = registration.function(transaction, *args, **kwargs)
            except Exception:
                self._crashed(hook, registration, Failure())
                continue
            finally:
                self.current = previous
            if value is None or value is DECLINED:
                if self._observed and hook not in _SILENT:
                    self._observe(transaction, hook, HookResult(DECLINED, None, None, registration.plugin))
                continue
            if iscoroutine(value):
                value = Deferred.fromCoroutine(value)
            if isinstance(value, Deferred):
                return self._wait(value, hook, chain, index, transaction, args, kwargs)
            result = self._answer(hook, registration, value, transaction)
            if result is not None and result.code != DECLINED:
                return result
        return NO_ANSWER

    def _wait(self, deferred: Deferred[Any], hook: str, chain: list[Registration], index: int,
              transaction: Transaction, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Deferred[HookResult]:
        registration = chain[index]
        deferred.addTimeout(registration.timeout, self.clock)

        def answered(value: Any) -> HookResult | Deferred[HookResult]:
            result = self._answer(hook, registration, value, transaction)
            if result is not None and result.code != DECLINED:
                return result
            return self._run_from(hook, chain, index + 1, transaction, args, kwargs)

        def failed(failure: Failure) -> HookResult | Deferred[HookResult] | Failure:
            if failure.check(TimeoutError):
                self.log(LOGERROR, f"hook {hook} timed out after {registration.timeout:g}s",
                         plugin=registration.plugin, hook=hook)
                return HookResult(DENYSOFT, "Timeout while checking your message, try again later",
                                  None, registration.plugin)
            if failure.check(CancelledError):
                return failure
            self._crashed(hook, registration, failure)
            return self._run_from(hook, chain, index + 1, transaction, args, kwargs)

        return deferred.addCallbacks(answered, failed)

    def _answer(self, hook: str, registration: Registration, value: Any,
                transaction: Transaction) -> HookResult | None:
        result = to_result(value, registration.plugin)
        if result is None:
            self.log(LOGERROR, f"plugin {registration.plugin}, hook {hook} returned {value!r}",
                     plugin=registration.plugin, hook=hook)
            return None
        if self._observed and hook not in _SILENT:
            self._observe(transaction, hook, result)
        return result

    def _crashed(self, hook: str, registration: Registration, failure: Failure) -> None:
        self.log(LOGCRIT, f"FATAL PLUGIN ERROR [{registration.plugin}]: {failure.getErrorMessage()}",
                 plugin=registration.plugin, hook=hook, failure=failure)

    def _observe(self, transaction: Transaction, hook: str, result: HookResult) -> None:
        observer = "deny" if result.code in DENY_CODES else "ok"
        for registration in self.chains.get(observer, ()):
            try:
                registration.function(transaction, result.plugin, result.code, result.message)
            except Exception:
                self._crashed(observer, registration, Failure())
