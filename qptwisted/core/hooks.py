"""The hook table and the chain runner.

Every fact about a hook lives in one :class:`HookSpec` in :data:`HOOKS`: its
arguments, whether it must answer synchronously, whether the ``deny``/``ok``
observers hear its answers, whether a broken plugin fails it closed, and the
reply table that turns its answers into SMTP replies.

:class:`HookRunner` runs chains: plugins in order, the first answer that is
not DECLINED wins. Synchronous answers take a fast path that creates no
Deferred at all; a plugin that returns a Deferred or is an ``async def``
suspends the chain, bounded by its timeout on the engine's clock.

A plugin that raises, returns something that is not an answer, or whose
Deferred fails, fails the chain *closed*: the chain answers DENYSOFT with the
:data:`~qptwisted.core.replies.FAULT` reply (451 4.3.0) and the log names
plugin and hook; a plugin loaded with ``fail_open`` is skipped instead.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from inspect import iscoroutine
from time import perf_counter
from types import CoroutineType
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from qptwisted.core import replies
from qptwisted.core.codes import (
    DECLINED,
    DENY_CODES,
    DENY_DISCONNECT,
    DENYSOFT,
    DENYSOFT_DISCONNECT,
    LOGCRIT,
    LOGERROR,
    NO_ANSWER,
    Code,
    HookResult,
    to_result,
)
from qptwisted.core.config import ConfigError
from qptwisted.core.replies import FAULT, Reply

if TYPE_CHECKING:
    from qptwisted.core.observer import Observer
    from qptwisted.mail.transaction import Transaction

LogFunction = Callable[..., None]
_DISCONNECTING = frozenset({DENY_DISCONNECT, DENYSOFT_DISCONNECT})
#: the transaction whose hook runs now; an ``async def`` hook keeps it across its awaits
_CURRENT: ContextVar[Any] = ContextVar("qptwisted_current_transaction", default=None)
_ALL_CODES = frozenset(Code)


@dataclass(frozen=True)
class HookSpec:
    """What the engine knows about one hook.

    ``args`` are the positional arguments after the transaction; ``keywords``
    fixed keyword arguments; ``params`` marks hooks that also get the ESMTP
    parameters of the command as keyword arguments (so a hook must take
    ``**params``). ``sync`` hooks must answer at once (no Deferred, no
    ``async def``). ``observed`` answers are passed to the ``deny``/``ok``
    observers; ``fail_closed`` hooks answer DENYSOFT when a plugin breaks.
    ``replies`` maps codes to the SMTP reply, ``declined`` is the reply when
    every plugin declined (None: the command's normal reply), and
    ``closing`` lists the codes after which the connection is closed.
    ``settle`` hooks (``queue``) are never answered for the plugin when its
    timeout passes: the delivery may still be running, and a 4xx would make
    the sender retry a message that did arrive; the timeout logs instead.
    """

    name: str
    args: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    params: bool = False
    sync: bool = False
    observed: bool = True
    fail_closed: bool = True
    replies: Mapping[Code, Reply] = field(default_factory=dict)
    declined: Reply | None = None
    closing: frozenset[Code] = _DISCONNECTING
    #: wait for the plugin's answer however long it takes (a timeout only logs): a 4xx must mean "not done"
    settle: bool = False
    doc: str = ""

    def reply(self, code: Code) -> Reply | None:
        """The reply for ``code``, or None when the code has none here."""
        return self.replies.get(code)

    def signature(self) -> str:
        """How a hook method of this hook is written."""
        parts = ["self", "transaction", *self.args, *(f"{k}=None" for k in self.keywords)]
        if self.params:
            parts.append("**params")
        return f"hook_{self.name}({', '.join(parts)})"

    def check(self, function: Callable[..., Any]) -> str | None:
        """Why ``function`` cannot serve this hook, or None if it can."""
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return None  # a builtin or C function: cannot be checked
        sample: dict[str, Any] = {key: None for key in self.keywords}
        if self.params:
            # any ESMTP parameter may come (BODY=8BITMIME, SIZE=, SMTPUTF8 ...): only **params takes all
            if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
                return f"it must take **params (the ESMTP parameters): {self.signature()}"
        try:
            signature.bind(None, *self.args, **sample)
        except TypeError as err:
            return f"{err}: write it as {self.signature()}"
        if self.sync:
            if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
                return f"hook {self.name} must answer at once; it cannot be an async def"
            returns = signature.return_annotation
            if returns is not signature.empty and any(word in str(returns) for word in _LATER):
                return f"hook {self.name} must answer at once; it is declared to return {returns}"
        return None


_AUTH_ARGS = ("mechanism", "user", "password", "password_hash", "ticket")
# return annotations that promise a later answer
_LATER = ("Deferred", "Awaitable", "Coroutine")
_PARSE_DOC = "Return (OK, parser): a callable that splits the command's argument. Must answer at once."


def _specs(*specs: HookSpec) -> dict[str, HookSpec]:
    return {spec.name: spec for spec in specs}


#: every hook the engine fires (qpsmtpd's names, ``-`` spelled ``_``), in the order of a session
HOOKS: dict[str, HookSpec] = _specs(
    HookSpec("logging", ("level", "hook", "plugin", "message"), sync=True, observed=False,
             fail_closed=False, doc="Every log line; a logging plugin writes it and returns DECLINED."),
    HookSpec("config", ("name",), sync=True, observed=False, fail_closed=False,
             doc="(OK, value, ...) supplies the values of config file NAME. transaction is None."),
    HookSpec("user_config", ("address", "name"), sync=True, observed=False, fail_closed=False,
             doc="(OK, value, ...) supplies a per-recipient config value. transaction is None."),
    HookSpec("pre_connection", keywords=("remote_ip", "remote_port", "local_ip", "local_port",
                                         "connections", "connections_from_ip"),
             replies=replies.PRE_CONNECTION, closing=_ALL_CODES,
             doc="A client connected; nothing was said yet. DENY*/DENYSOFT* refuse and close."),
    HookSpec("connect", replies=replies.CONNECT, closing=_ALL_CODES,
             doc="Before the greeting. DENY*/DENYSOFT* refuse and close; DONE: the plugin greeted."),
    HookSpec("helo_parse", sync=True, observed=False, doc=_PARSE_DOC),
    HookSpec("ehlo_parse", sync=True, observed=False, doc=_PARSE_DOC),
    HookSpec("helo", ("host",), replies=replies.HELO,
             doc="HELO HOST. OK with a message replaces the 250 text."),
    HookSpec("ehlo", ("host",), replies=replies.HELO,
             doc="EHLO HOST. Add EHLO keywords to transaction.notes['capabilities']."),
    HookSpec("auth_parse", sync=True, observed=False, doc=_PARSE_DOC),
    HookSpec("auth_plain", _AUTH_ARGS, doc="Check AUTH PLAIN credentials: OK 235, DENY 535, DENYSOFT 454."),
    HookSpec("auth_login", _AUTH_ARGS, doc="Check AUTH LOGIN credentials: OK 235, DENY 535, DENYSOFT 454."),
    HookSpec("auth_cram_md5", _AUTH_ARGS,
             doc="Check AUTH CRAM-MD5: password_hash is the client's digest, ticket the challenge."),
    HookSpec("auth", _AUTH_ARGS, doc="Check credentials of any mechanism no auth_<mech> plugin decided."),
    HookSpec("mail_parse", sync=True, observed=False, doc=_PARSE_DOC),
    HookSpec("mail_pre", ("path", "params"),
             doc="Before the sender is parsed; (OK, 'new path') replaces it."),
    HookSpec("mail", ("sender",), params=True, replies=replies.MAIL,
             doc="MAIL FROM. DENY 550, DENYSOFT 450, OK with a message replaces the 250 text."),
    HookSpec("rcpt_parse", sync=True, observed=False, doc=_PARSE_DOC),
    HookSpec("rcpt_pre", ("path", "params"),
             doc="Before a recipient is parsed; (OK, 'new path') replaces it."),
    HookSpec("rcpt", ("rcpt",), params=True, replies=replies.RCPT, declined=replies.RCPT_DECLINED,
             doc="RCPT TO. OK accepts; DENY 550; DENYSOFT 450; every plugin DECLINED: 450."),
    HookSpec("data", replies=replies.DATA, doc="DATA, before 354. DENY 554, DENYSOFT 451."),
    HookSpec("data_headers_end", replies=replies.DATA_HEADERS_END,
             doc="The header block arrived (the body may still come). Only *_DISCONNECT answers now; "
                 "note a refusal in the transaction and answer it at data_post."),
    HookSpec("data_post_headers", observed=False, fail_closed=False,
             doc="The whole message arrived, before Received is added: add Authentication-Results."),
    HookSpec("received_line", ("smtp", "auth", "ssl"), observed=False, fail_closed=False,
             doc="(OK, 'value') replaces our Received header's value."),
    HookSpec("data_post", replies=replies.DATA_POST,
             doc="The message is complete, with our headers. DENY 552, DENYSOFT 452."),
    HookSpec("queue_pre", replies=replies.QUEUE, closing=frozenset(),
             doc="Before queueing. DENY/DENYSOFT refuse with the queue reply; DONE drops the message."),
    HookSpec("queue", replies=replies.QUEUE, declined=replies.QUEUE_DECLINED, closing=frozenset(),
             settle=True,
             doc="Store or hand on the message. OK: 250 (only once it is durable); "
                 "every plugin DECLINED: 451."),
    HookSpec("queue_post", observed=False, fail_closed=False, doc="After the queue reply was sent."),
    HookSpec("reset_transaction", observed=False, fail_closed=False,
             doc="The transaction ends (RSET, new MAIL, end of DATA, disconnect)."),
    HookSpec("vrfy", replies=replies.VRFY, doc="VRFY. OK 250; DENY 554; else 252."),
    HookSpec("noop", replies=replies.NOOP, doc="NOOP. DENY 500."),
    HookSpec("help", ("rest",), replies=replies.HELP, doc="HELP. (OK, 'text') replaces the help text."),
    HookSpec("quit", doc="QUIT. DONE: the plugin answered (e.g. with connection.respond)."),
    HookSpec("unrecognized_command", ("verb", "rest"), replies=replies.UNRECOGNIZED,
             doc="A verb the engine does not know (plugins add verbs here). DONE: the plugin answered."),
    HookSpec("disconnect", observed=False, fail_closed=False, doc="The connection is closing."),
    HookSpec("post_connection", observed=False, fail_closed=False, doc="After the connection closed."),
    HookSpec("deny", ("plugin", "code", "message"), observed=False, fail_closed=False,
             doc="Observer: some plugin refused (DENY*/DENYSOFT*)."),
    HookSpec("ok", ("plugin", "code", "message"), observed=False, fail_closed=False,
             doc="Observer: some plugin answered something else than a refusal."),
)


def hook_name(name: str) -> str:
    """The canonical spelling of a hook name: ``pre-connection`` -> ``pre_connection``."""
    return name.replace("-", "_")


class HookError(ConfigError):
    """A plugin cannot be registered on a hook (unknown hook, wrong signature, async where sync)."""


class Registration(NamedTuple):
    """One plugin method registered on one hook."""

    plugin: str
    function: Callable[..., Any]
    timeout: float
    fail_open: bool = False


class _Run:
    """One asynchronous run of a chain: where it is, and whether its caller gave up on it."""

    __slots__ = ("hook", "chain", "transaction", "args", "kwargs", "cancelled", "outer")

    def __init__(self, hook: HookSpec, chain: list[Registration], transaction: Transaction | None,
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.hook = hook
        self.chain = chain
        self.transaction = transaction
        self.args = args
        self.kwargs = kwargs
        self.cancelled = False
        self.outer: Deferred[HookResult] | None = None


class HookRunner:
    """Holds the registrations of every hook and runs their chains."""

    def __init__(self, clock: IReactorTime, log: LogFunction) -> None:
        self.clock = clock
        self.log = log
        self.chains: dict[str, list[Registration]] = {}
        self._observed = False
        #: while the ``deny``/``ok`` observers run: the hook whose answer they hear
        self.observed_hook: str | None = None
        #: faults (plugin crashed or answered nonsense) per (plugin, hook)
        self.faults: Counter[tuple[str, str]] = Counter()
        #: told each plugin's answer and its time (:mod:`qptwisted.core.observer`); None costs nothing
        self.observer: Observer | None = None

    def register(self, hook: str, plugin: str, function: Callable[..., Any],
                 timeout: float, unshift: bool = False, fail_open: bool = False) -> None:
        """Add ``function`` to ``hook``'s chain (first with ``unshift``); :class:`HookError` if it cannot."""
        name = hook_name(hook)
        spec = HOOKS.get(name)
        if spec is None:
            raise HookError(f"plugin {plugin}: there is no hook {hook!r}")
        problem = spec.check(function)
        if problem is not None:
            raise HookError(f"plugin {plugin}, hook {name}: {problem}")
        chain = self.chains.setdefault(name, [])
        chain.insert(0 if unshift else len(chain), Registration(plugin, function, timeout, fail_open))
        self._observed = bool(self.chains.get("deny") or self.chains.get("ok"))

    @property
    def current(self) -> Transaction | None:
        """The transaction whose hook is running now (loggers tag lines with its ids).

        A context variable: an ``async def`` hook still sees its transaction
        after an ``await``, while other connections' hooks run meanwhile.
        """
        return _CURRENT.get()  # type: ignore[no-any-return]

    def has(self, hook: str) -> bool:
        """True if any plugin registered on ``hook``."""
        return hook in self.chains

    # -- running ---------------------------------------------------------------
    def run(self, hook: str, transaction: Transaction | None, *args: Any,
            **kwargs: Any) -> HookResult | Deferred[HookResult]:
        """Run ``hook``'s chain; a plain :class:`HookResult` when nothing was asynchronous."""
        chain = self.chains.get(hook)
        if not chain:
            return NO_ANSWER
        spec = HOOKS[hook]
        if spec.sync:
            return self.run_sync(hook, transaction, *args, **kwargs)
        return self._run_from(_Run(spec, chain, transaction, args, kwargs), 0)

    def run_sync(self, hook: str, transaction: Transaction | None, *args: Any, **kwargs: Any) -> HookResult:
        """Run a chain whose plugins must answer at once (``config``, ``logging``, ``*_parse``).

        A Deferred or coroutine from such a hook is refused: logged, and
        treated as a broken plugin.
        """
        chain = self.chains.get(hook)
        if not chain:
            return NO_ANSWER
        spec = HOOKS[hook]
        for registration in chain:
            token = _CURRENT.set(transaction)
            try:
                value = registration.function(transaction, *args, **kwargs)
            except Exception:
                result = self._fault(spec, registration, Failure(), transaction)
                if result is not None:
                    return result
                continue
            finally:
                _CURRENT.reset(token)
            if value is None or value is DECLINED:
                continue
            if isinstance(value, Deferred) or iscoroutine(value):
                if iscoroutine(value):
                    value.close()
                else:
                    value.addErrback(lambda _: None)
                result = self._fault(spec, registration, f"returned {type(value).__name__} from "
                                     f"hook {hook}, which must answer at once", transaction)
            else:
                result = self._answer(spec, registration, value, transaction)
            if result is not None and result.code != DECLINED:
                return result
        return NO_ANSWER

    def _run_from(self, run: _Run, start: int) -> HookResult | Deferred[HookResult]:
        chain = run.chain
        spec = run.hook
        transaction = run.transaction
        observer = self.observer
        started = 0.0
        for index in range(start, len(chain)):
            registration = chain[index]
            token = _CURRENT.set(transaction)
            if observer is not None:
                started = perf_counter()
            try:
                value = registration.function(transaction, *run.args, **run.kwargs)
                if value.__class__ is CoroutineType:  # its steps run in a copy of this context
                    value = Deferred.fromCoroutine(value)
            except Exception:
                result = self._fault(spec, registration, Failure(), transaction)
                if observer is not None:
                    self._report(transaction, registration, spec, result, started)
                if result is not None:
                    return self._settle(run, result)
                continue
            finally:
                _CURRENT.reset(token)
            if value is None or value is DECLINED:
                if observer is not None:
                    self._report(transaction, registration, spec, None, started)
                if self._observed and spec.observed:
                    self._observe(transaction, HookResult(DECLINED, None, None, registration.plugin))
                continue
            # a Deferred is checked last: Deferred is an ABC, so isinstance on it is slow
            if value.__class__ not in _ANSWER_TYPES and isinstance(value, Deferred):
                return self._wait(run, index, value, started)
            result = self._answer(spec, registration, value, transaction)
            if observer is not None:
                self._report(transaction, registration, spec, result, started)
            if result is not None and result.code != DECLINED:
                return self._settle(run, result)
        return self._settle(run, NO_ANSWER)

    def _report(self, transaction: Transaction | None, registration: Registration, spec: HookSpec,
                result: HookResult | None, started: float) -> None:
        """Tell the observer what one plugin answered (None: it was skipped) and how long it took."""
        observer = self.observer
        if observer is not None:
            observer.hook_answered(transaction, registration.plugin, spec.name,
                                   DECLINED if result is None else result.code, perf_counter() - started)

    def _settle(self, run: _Run, result: HookResult) -> HookResult | Deferred[HookResult]:
        outer = run.outer
        if outer is None:
            return result
        if not outer.called:
            outer.callback(result)
        return result

    def _wait(self, run: _Run, index: int, deferred: Deferred[Any], started: float) -> Deferred[HookResult]:
        registration = run.chain[index]
        spec = run.hook
        if spec.settle:
            late = self.clock.callLater(registration.timeout, self._late, spec, registration)
            deferred.addBoth(_cancel_timer, late)
        else:
            deferred.addTimeout(registration.timeout, self.clock)

        def answered(value: Any) -> None:
            if run.cancelled:
                return
            result = self._answer(spec, registration, value, run.transaction)
            self._report(run.transaction, registration, spec, result, started)
            if result is not None and result.code != DECLINED:
                self._settle(run, result)
            else:
                self._run_from(run, index + 1)

        def failed(failure: Failure) -> None:
            if run.cancelled:
                return
            if failure.check(TimeoutError):
                self.log(LOGERROR, f"hook {spec.name} timed out after {registration.timeout:g}s",
                         plugin=registration.plugin, hook=spec.name)
                timeout = HookResult(DENYSOFT, "Timeout while checking your message, try again later",
                                     None, registration.plugin)
                self._report(run.transaction, registration, spec, timeout, started)
                self._settle(run, timeout)
                return
            result = self._fault(spec, registration, failure, run.transaction)
            self._report(run.transaction, registration, spec, result, started)
            if result is not None:
                self._settle(run, result)
            else:
                self._run_from(run, index + 1)

        first = run.outer is None
        if first:

            def cancel(_: Deferred[HookResult]) -> None:
                # the caller gave up (the client went away): stop quietly, no reply, no fault;
                # a settle hook (queue) is left to finish its delivery
                run.cancelled = True
                if not spec.settle:
                    deferred.cancel()

            run.outer = Deferred(cancel)
        deferred.addCallbacks(answered, failed).addErrback(self._broken, run, registration)
        assert run.outer is not None
        return run.outer

    def _late(self, spec: HookSpec, registration: Registration) -> None:
        self.log(LOGERROR, f"hook {spec.name} has not answered after {registration.timeout:g}s; waiting for "
                 "it to finish (an answer now could make the sender retry a delivered message)",
                 plugin=registration.plugin, hook=spec.name)

    def _broken(self, failure: Failure, run: _Run, registration: Registration) -> None:
        # a bug on our side of the chain must still end it with an answer, never hang the session
        self.log(LOGCRIT, f"hook {run.hook.name} broke after {registration.plugin} answered: "
                 f"{failure.getErrorMessage()}", plugin=registration.plugin, hook=run.hook.name,
                 failure=failure)
        self._settle(run, HookResult(DENYSOFT, None, FAULT, registration.plugin))

    # -- answers and faults -------------------------------------------------------
    def _answer(self, spec: HookSpec, registration: Registration, value: Any,
                transaction: Transaction | None) -> HookResult | None:
        result = to_result(value, registration.plugin)
        if result is None:
            return self._fault(spec, registration, f"returned {value!r}, which is not an answer "
                               "(return DECLINED, a code, or (code, 'message'))", transaction)
        if self._observed and spec.observed:
            self._observe(transaction, result, spec.name)
        return result

    def _fault(self, spec: HookSpec, registration: Registration, why: Failure | str,
               transaction: Transaction | None) -> HookResult | None:
        """Log and count a broken plugin; the DENYSOFT answer that fails the chain closed, or None."""
        self.faults[registration.plugin, spec.name] += 1
        failure = why if isinstance(why, Failure) else None
        text = f"{type(failure.value).__name__}: {failure.getErrorMessage()}" if failure is not None else why
        closed = spec.fail_closed and not registration.fail_open
        consequence = "the command is deferred (fail closed)" if closed else "skipped"
        self.log(LOGCRIT, f"PLUGIN ERROR [{registration.plugin}] hook {spec.name}: {text}; {consequence}",
                 plugin=registration.plugin, hook=spec.name, failure=failure)
        if not closed:
            return None
        return HookResult(DENYSOFT, None, FAULT, registration.plugin)

    def _observe(self, transaction: Transaction | None, result: HookResult, hook: str | None = None) -> None:
        observer = "deny" if result.code in DENY_CODES else "ok"
        # observers may read which hook answered (logging/json writes it) without a new argument
        previous, self.observed_hook = self.observed_hook, hook
        try:
            for registration in self.chains.get(observer, ()):
                try:
                    registration.function(transaction, result.plugin, result.code, result.message)
                except Exception:
                    self._fault(HOOKS[observer], registration, Failure(), transaction)
        finally:
            self.observed_hook = previous


#: what a hook usually answers with: none of them is a Deferred
_ANSWER_TYPES = frozenset({Code, tuple, HookResult, int, str, bool})


def _cancel_timer(result: Any, timer: Any) -> Any:
    if timer.active():
        timer.cancel()
    return result


def is_fault(result: HookResult) -> bool:
    """True for the answer of a chain that a broken plugin failed closed."""
    return result.value is FAULT


__all__ = ["HOOKS", "HookSpec", "HookRunner", "HookError", "Registration", "hook_name", "is_fault"]
