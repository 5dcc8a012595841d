"""The SMTP state machine: verbs, transactions, and the reply contract.

The session knows nothing of sockets. The protocol hands it command lines and
message pieces; it runs hook chains and answers through ``respond``. A verb
method returns ``None`` when it answered at once, or a Deferred that fires
when it has answered (the protocol holds later input until then).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from qptwisted._version import __version__
from qptwisted.core.codes import (
    DECLINED,
    DONE,
    LOGERROR,
    LOGINFO,
    NO_ANSWER,
    OK,
    HookResult,
)
from qptwisted.core.groups import group_config_list, group_of, groups_in_use
from qptwisted.core.hooks import HOOKS, HookSpec
from qptwisted.core.replies import FAULT, Reply, format_reply
from qptwisted.interfaces import IConnectionControl
from qptwisted.mail.address import Address, AddressError, parse_params, split_path
from qptwisted.mail.connection import Connection, TLSInfo
from qptwisted.mail.dsn import RecipientDSN
from qptwisted.mail.headers import (
    authentication_results,
    neutralize_forged_results,
    received_line,
)
from qptwisted.mail.transaction import Transaction
from qptwisted.smtp import sasl
from qptwisted.smtp.chunking import Chunking
from qptwisted.smtp.extensions import (
    NO_PARAMETERS,
    ParameterError,
    ehlo_keywords,
    extension_names,
    mail_options,
    recipient_dsn,
)
from qptwisted.smtp.receiver import ChunkDiscarder, MessageReceiver, Receiver

if TYPE_CHECKING:
    from qptwisted.core.engine import Engine

Step = Deferred[Any] | None
#: the verbs with a method of the same name on :class:`Session`
COMMANDS = frozenset(("helo", "ehlo", "mail", "rcpt", "data", "rset", "noop", "vrfy",
                      "help", "quit", "auth", "bdat"))
_VERB = re.compile(r"[A-Za-z0-9_-]{1,12}\Z")
_HELP = ("This is qptwisted {version}\nSee the README of qptwisted for help.\n"
         "To report bugs or send comments, mail to <postmaster@{me}>.")
_CONNECT, _PRE_CONNECTION, _HELO = HOOKS["connect"], HOOKS["pre_connection"], HOOKS["helo"]
_MAIL, _RCPT, _DATA, _DATA_POST = HOOKS["mail"], HOOKS["rcpt"], HOOKS["data"], HOOKS["data_post"]
_DATA_HEADERS_END, _QUEUE, _NOOP = HOOKS["data_headers_end"], HOOKS["queue"], HOOKS["noop"]
_VRFY, _HELP_HOOK, _UNRECOGNIZED = HOOKS["vrfy"], HOOKS["help"], HOOKS["unrecognized_command"]


class Transport(Protocol):
    """What a session needs from the protocol below it."""

    def write(self, data: bytes) -> None:
        """Send reply bytes."""

    def close(self) -> None:
        """Close the connection after pending writes."""

    def start_data(self, receiver: Receiver) -> None:
        """Hand the following input to ``receiver`` until the message (or BDAT chunk) ends."""

    def start_tls(self, context: Any) -> None:
        """Discard buffered input and start TLS with ``context``."""

    def message_accepted(self) -> None:
        """A message was queued (the command count starts again)."""

    def flush(self) -> None:
        """Send the replies collected so far now."""


class _Answered(Exception):
    """The command was already answered (a faulted parse hook): nothing more to say."""


@implementer(IConnectionControl)
class Session:
    """One SMTP conversation, qpsmtpd's ``Qpsmtpd::SMTP``.

    It is the connection's control interface (:class:`IConnectionControl`):
    plugins reply, disconnect and start TLS through ``transaction.connection``.
    ``sync_point`` is true while the client must wait for our answer without
    sending anything (before the greeting, after DATA before 354): bytes
    that arrive then make the connection an ``early_talker``.
    """

    def __init__(self, engine: Engine, connection: Connection, transport: Transport) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.connection = connection
        self.transport = transport
        self.closed = False
        self.sync_point = False
        #: the code of the last reply sent (what an observer reads when a transaction ends)
        self.last_reply = 0
        connection.control = self
        self.transaction = self._new_transaction()
        self.receiver: MessageReceiver | None = None
        self.chunking = Chunking(self)
        #: the MAIL/RCPT parameters plugins offered with their EHLO keywords
        self.plugin_parameters = NO_PARAMETERS
        #: transactions this connection started (LIMITS MAILMAX)
        self.mails = 0
        self._line_handler: Callable[[str], Step] | None = None

    # -- plumbing -------------------------------------------------------------
    def respond(self, code: int, message: str, enhanced: str | None = "") -> None:
        """Write a reply; ``enhanced=""`` picks x.0.0 from the code, None sends none."""
        if self.closed:
            return
        self.last_reply = code
        if enhanced == "":
            enhanced = f"{str(code)[0]}.0.0" if code >= 200 and code < 300 or code >= 400 else None
        self.transport.write(format_reply(code, message, enhanced))

    def disconnect(self) -> None:
        """Close the connection once the replies are written."""
        if not self.closed:
            self.closed = True
            self.transport.close()

    def _reply(self, reply: Reply, result: HookResult, close: bool = False, **fields: str) -> None:
        text = result.message or (reply.text.format(**fields) if fields else reply.text)
        self.respond(reply.code, text, reply.enhanced)
        if close:
            self.disconnect()

    def _run(self, hook: str, then: Callable[[HookResult], Step], *args: Any, **kwargs: Any) -> Step:
        hooks = self.engine.hooks
        if hook not in hooks.chains:  # most hooks of most commands have no plugin: nothing to run
            return then(NO_ANSWER)
        result = hooks.run(hook, self.transaction, *args, **kwargs)
        if result.__class__ is HookResult:  # not isinstance(Deferred): Deferred is an ABC, slow to test
            return then(result)  # type: ignore[arg-type]
        return result.addCallback(self._continue, then)  # type: ignore[union-attr]

    def _continue(self, result: HookResult, then: Callable[[HookResult], Step]) -> Step:
        if self.closed:
            return None
        return then(result)

    def _deny(self, hook: HookSpec, result: HookResult, **fields: str) -> bool:
        """Send the reply for a refusing answer; True if ``result`` was one (or DONE).

        A chain that a broken plugin failed closed answers the FAULT reply (451 4.3.0);
        a refusal that carries a :class:`Reply` (``(DENYSOFT, Reply(451, "4.7.1", "..."))``,
        a milter's ``SMFIR_REPLYCODE``) is sent as it is.
        """
        if result.code is DONE:
            return True
        reply = self._refusal(hook, result, **fields)
        if reply is None:
            return False
        self.respond(reply.code, reply.text, reply.enhanced)
        if result.code in hook.closing:
            self.disconnect()
        return True

    def _refusal(self, hook: HookSpec, result: HookResult, **fields: str) -> Reply | None:
        """The reply a refusing answer gets at ``hook`` (None: ``result`` is no refusal)."""
        if result.value is FAULT:
            return FAULT
        reply = hook.replies.get(result.code)
        if reply is None:
            return None
        if isinstance(result.value, Reply):  # the plugin chose the exact reply (a scanner, a milter)
            return result.value
        return reply._replace(text=result.message or (reply.text.format(**fields) if fields else reply.text))

    def _new_transaction(self) -> Transaction:
        return Transaction(self.connection, self.settings.spool_dir, self.settings.size_threshold)

    def reset_transaction(self) -> None:
        """End the transaction (firing ``reset_transaction``) and start a new one."""
        old = self.transaction
        if self.engine.observer is not None:
            self.engine.observer.transaction_ended(self, old)
        if self.engine.hooks.has("reset_transaction"):
            self.engine.hooks.run("reset_transaction", old)  # an observer: its answer does not matter
        old.close()
        self.transaction = self._new_transaction()
        self.receiver = None  # a BDAT sequence ends with its transaction
        self.chunking.error = None

    def fault(self, command: str, failure: Failure) -> None:
        """Answer 451 for a command that failed inside the engine, and log why."""
        self.engine.log(LOGERROR, f"command {command!r} failed: {failure.getErrorMessage()}",
                        failure=failure, transaction=self.transaction)
        self.respond(451, f"Internal error - try again later - command '{command}' failed unexpectedly",
                     "4.3.0")

    # -- connection start and end -------------------------------------------
    def start(self, concurrent: int = 1, concurrent_from_ip: int = 1) -> Step:
        """Run ``pre-connection`` and ``connect``, then greet."""
        c = self.connection
        self.sync_point = True
        if self.engine.observer is not None:
            self.engine.observer.connection_opened(self)
        return self._run("pre_connection", self._after_pre_connection,
                         remote_ip=c.remote_ip, remote_port=c.remote_port, local_ip=c.local_ip,
                         local_port=c.local_port, connections=concurrent,
                         connections_from_ip=concurrent_from_ip)

    def _after_pre_connection(self, result: HookResult) -> Step:
        if result.code is not DONE and self._deny(_PRE_CONNECTION, result):
            return None
        return self._run("connect", self._greet)

    def _greet(self, result: HookResult) -> Step:
        self.sync_point = False
        if self._deny(_CONNECT, result):
            return None
        greeting = self.settings.greeting
        if greeting is None:
            greeting = (f"{self.settings.me} ESMTP qptwisted {__version__} ready; "
                        "send us your mail, but not your spam.")
        elif "ESMTP" not in greeting:
            greeting += " ESMTP"
        self.respond(220, greeting, None)
        return None

    def connection_lost(self) -> None:
        """The client is gone: ``disconnect``, ``reset_transaction``, ``post-connection``."""
        self.closed = True
        if self.receiver is not None:
            receiver, self.receiver = self.receiver, None
            receiver.abort()
        hooks = self.engine.hooks
        if hooks.has("disconnect"):
            hooks.run("disconnect", self.transaction)
        self.reset_transaction()
        if hooks.has("post_connection"):
            hooks.run("post_connection", self.transaction)
        self.transaction.close()
        self.connection.control = None
        if self.engine.observer is not None:
            self.engine.observer.connection_closed(self)

    # -- commands -------------------------------------------------------------
    def command(self, line: str) -> Step:
        """Dispatch one command line (without its line ending)."""
        if self._line_handler is not None:
            expected, self._line_handler = self._line_handler, None
            try:
                return expected(line)
            except Exception:
                self.fault("continuation", Failure())
                return None
        verb, _, rest = line.partition(" ")
        name = verb.lower()
        try:
            if name not in COMMANDS:
                return self.unrecognized(verb, rest.strip())
            # looked up by name, not held per session: an idle connection costs less
            step = getattr(self, name)(rest.strip())
        except _Answered:
            return None
        except Exception:
            self.fault(verb, Failure())
            return None
        if step is not None:
            step.addErrback(self._step_failed, verb)
        return step

    def expect_line(self, handler: Callable[[str], Step]) -> None:
        """Give the next input line to ``handler`` instead of the verb table (SASL ``334``)."""
        self._line_handler = handler

    def start_tls(self, context: Any, implicit: bool = False) -> None:
        """STARTTLS (RFC 3207): answer 220, switch to TLS, forget HELO, AUTH and the transaction.

        Plaintext the client pipelined after STARTTLS is discarded. With
        ``implicit`` (SMTPS) nothing is written and nothing reset.
        """
        if not implicit:
            self.respond(220, "Ready to start TLS", "2.0.0")
        self._line_handler = None
        self.transport.start_tls(context)
        if not implicit:
            self.connection.reset_after_tls()
            self.reset_transaction()

    def tls_established(self, info: TLSInfo) -> None:
        """The TLS handshake finished: record what was negotiated for plugins and Received."""
        self.connection.tls = info

    def auth(self, rest: str) -> Step:
        """AUTH (RFC 4954): SASL PLAIN, LOGIN, CRAM-MD5 through the auth hooks."""
        return sasl.auth_command(self, rest)

    def _step_failed(self, failure: Failure, verb: str) -> None:
        if not self.closed and not failure.check(CancelledError):
            self.fault(verb, failure)

    def unrecognized(self, verb: str, rest: str) -> Step:
        """Unknown verbs (and verbs added by plugins: STARTTLS, AUTH ...)."""
        verb = verb.lower() if _VERB.match(verb) else verb
        return self._run("unrecognized_command", self._after_unrecognized, verb, rest)

    def _after_unrecognized(self, result: HookResult) -> Step:
        if not self._deny(_UNRECOGNIZED, result):
            self.respond(500, "Unrecognized command", "5.5.1")
        return None

    def _parser(self, hook: str) -> Callable[[str], Any] | None:
        """The parser a ``*_parse`` hook offers; a broken one answers the command with FAULT."""
        if not self.engine.hooks.has(hook):
            return None
        result = self.engine.hooks.run_sync(hook, self.transaction)
        if result.value is FAULT:
            self._reply(FAULT, result._replace(message=None))
            raise _Answered()
        return result.value if callable(result.value) else None

    def _faulted(self, result: HookResult) -> bool:
        """Answer FAULT for a chain a broken plugin failed closed (hooks without a reply table)."""
        if result.value is not FAULT:
            return False
        self._reply(FAULT, result._replace(message=None))
        return True

    # HELO / EHLO
    def helo(self, rest: str) -> Step:
        """HELO: greet in plain SMTP."""
        return self._hello("helo", rest)

    def ehlo(self, rest: str) -> Step:
        """EHLO: greet and list the extensions."""
        return self._hello("ehlo", rest)

    def _hello(self, verb: str, rest: str) -> Step:
        parser = self._parser(f"{verb}_parse")
        words = parser(rest) if parser else rest.split()
        if not words:
            self.respond(501, f"{verb} requires domain/address - see RFC-5321 4.1.1.1", "5.5.4")
            return None
        if self.connection.hello:
            self.respond(503, f"but you already said {self.connection.hello.upper()} ...", "5.5.1")
            return None
        host = words[0]
        return self._run(verb, lambda result: self._after_hello(verb, host, result), host)

    def _after_hello(self, verb: str, host: str, result: HookResult) -> Step:
        if self._deny(_HELO, result):
            return None
        connection = self.connection
        connection.hello, connection.hello_host = verb, host
        hi = f"{self.settings.me} Hi {connection.remote_info} [{connection.remote_ip}]"
        if verb == "helo":
            self.respond(250, result.message or f"{hi}; I am so happy to meet you.", None)
            return None
        lines = [hi, *ehlo_keywords(self.settings, connection)]
        notes = Transaction.notes.peek(self.transaction)  # most sessions have none: make no dict
        offered = list(notes.get("capabilities", ())) if notes else []
        self.plugin_parameters = extension_names(offered)
        lines += offered
        lines += sasl.capabilities(self)
        self.respond(250, "\n".join(lines), None)
        return None

    # MAIL
    def mail(self, rest: str) -> Step:
        """MAIL FROM: start a transaction."""
        if not self.connection.hello:
            self.respond(503, "please say hello first ...", "5.5.1")
            return None
        self.reset_transaction()
        if self.settings.max_messages and self.mails >= self.settings.max_messages:
            self.respond(421, f"{self.settings.me} Too many messages in one session (LIMITS MAILMAX), "
                         "closing connection", "4.7.0")
            self.disconnect()
            return None
        keyword, colon, argument = rest.partition(":")
        if not colon or keyword.strip().lower() != "from":
            self.respond(501, "Syntax error in command", "5.5.4")
            return None
        self.connection.notes["envelope_from"] = argument
        parsed = self._parse_envelope("mail_parse", argument)
        if parsed is None:
            return None
        path, params = parsed
        try:
            options = mail_options(params, self.settings, self.connection, self.plugin_parameters)
        except ParameterError as err:
            self.respond(err.reply.code, err.reply.text, err.reply.enhanced)
            return None
        transaction = self.transaction
        transaction.body_type, transaction.dsn = options.body_type, options.dsn
        transaction.requiretls = options.requiretls
        transaction.notes["mail_params"] = params
        return self._run("mail_pre", lambda result: self._mail_address(path, params, result), path, params)

    def _parse_envelope(self, hook: str, argument: str) -> tuple[str, dict[str, str | None]] | None:
        parser = self._parser(hook)
        try:
            if parser is not None:
                path, params = parser(argument)
                return str(path), dict(params)
            path, param_text = split_path(argument)
            return (path or "<>"), parse_params(param_text)
        except (AddressError, ValueError, TypeError):
            self.respond(501, "Syntax error in parameters", "5.5.4")
            return None

    def _mail_address(self, path: str, params: dict[str, str | None], result: HookResult) -> Step:
        if self._faulted(result):
            return None
        if result.code is OK and (result.message or result.value):
            path = str(result.message or result.value)
        try:
            sender = Address.parse(path, utf8="smtputf8" in params)
        except AddressError as err:
            if "SMTPUTF8" in str(err):
                self.respond(553, "Non-ASCII address requires SMTPUTF8", "5.6.7")
            else:
                self.respond(501, "could not parse your mail from command", "5.1.7")
            return None
        return self._run("mail", lambda result: self._after_mail(sender, result), sender, **params)

    def _after_mail(self, sender: Address, result: HookResult) -> Step:
        if self._deny(_MAIL, result, addr=str(sender)):
            return None
        self.transaction.sender = sender
        self.mails += 1
        self.respond(250, result.message if result.code is OK and result.message else
                     f"{sender}, sender OK - how exciting to get mail from you!", "2.1.0")
        return None

    # RCPT
    def rcpt(self, rest: str) -> Step:
        """RCPT TO: add a recipient if a plugin says OK."""
        transaction = self.transaction
        if transaction.sender is None:
            self.respond(503, "Use MAIL before RCPT", "5.5.1")
            return None
        keyword, colon, argument = rest.partition(":")
        if not colon or keyword.strip().lower() != "to":
            self.respond(501, "Syntax error in command", "5.5.4")
            return None
        if len(transaction.recipients) >= self.settings.max_recipients:
            self.respond(452, "Too many recipients", "4.5.3")
            return None
        parsed = self._parse_envelope("rcpt_parse", argument)
        if parsed is None:
            return None
        path, params = parsed
        try:
            dsn = recipient_dsn(params, self.plugin_parameters)
        except ParameterError as err:
            self.respond(err.reply.code, err.reply.text, err.reply.enhanced)
            return None
        return self._run("rcpt_pre", lambda result: self._rcpt_address(path, params, dsn, result),
                         path, params)

    def _rcpt_address(self, path: str, params: dict[str, str | None], dsn: RecipientDSN | None,
                      result: HookResult) -> Step:
        if self._faulted(result):
            return None
        if result.code is OK and (result.message or result.value):
            path = str(result.message or result.value)
        utf8 = "smtputf8" in self.transaction.notes.get("mail_params", {})
        try:
            recipient = Address.parse(path, utf8=utf8, allow_postmaster=True, allow_null=False)
        except AddressError as err:
            if "SMTPUTF8" in str(err):
                self.respond(553, "Non-ASCII address requires SMTPUTF8", "5.6.7")
            else:
                self.respond(501, "could not parse recipient", "5.1.3")
            return None
        group = group_of(self.engine, recipient) if groups_in_use(self.engine) else None
        if dsn is not None or group is not None:
            recipient = replace(recipient, dsn=dsn, policy_group=group)
        if self._other_group(recipient):
            return None
        return self._run("rcpt", lambda result: self._after_rcpt(recipient, result), recipient, **params)

    def _other_group(self, recipient: Address) -> bool:
        """Answer a recipient that cannot join this transaction's policy group (or its size limit)."""
        transaction = self.transaction
        group = recipient.policy_group
        if transaction.recipients and group != transaction.policy_group:
            # one answer per message after DATA: the sender's MTA retries it alone (RFC 5321 4.5.3.1.10)
            self.respond(452, f"{recipient} is in another policy group; send it in a separate transaction",
                         "4.5.3")
            return True
        size: str | None = transaction.notes.get("mail_params", {}).get("size")  # checked digits at MAIL
        limit = self.databytes(group) if group is not None and size is not None else 0
        if limit and int(size or 0) > limit:
            self.respond(552, "Message size exceeds the maximum for this recipient", "5.3.4")
            return True
        return False

    def _after_rcpt(self, recipient: Address, result: HookResult) -> Step:
        if self._deny(_RCPT, result):
            return None
        if result.code is not OK:
            self._reply(_RCPT.declined,  # type: ignore[arg-type]
                        result._replace(message=None))
            return None
        if not self.transaction.recipients:
            self.transaction.policy_group = recipient.policy_group
        self.transaction.add_recipient(recipient)
        self.respond(250, result.message or f"{recipient}, recipient ok", "2.1.5")
        return None

    # DATA
    def data(self, rest: str) -> Step:
        """DATA: run the ``data`` hook, check the envelope, then read the message."""
        if self.receiver is not None:
            self.respond(503, "DATA cannot follow BDAT in one transaction (RFC 3030)", "5.5.1")
            return None
        if self.transaction.binary:
            self.respond(503, "BODY=BINARYMIME needs BDAT, not DATA (RFC 3030)", "5.5.1")
            return None
        self.sync_point = True
        return self._run("data", self._after_data)

    def bdat(self, rest: str) -> Step:
        """BDAT (RFC 3030): a chunk of the message; see :mod:`qptwisted.smtp.chunking`."""
        return self.chunking.command(rest)

    def databytes(self, group: str | None = "") -> int:
        """The size limit of this transaction's policy group (``group``: of that group instead)."""
        group = self.transaction.policy_group if group == "" else group
        if group is None:
            return self.settings.databytes
        words = " ".join(group_config_list(self.engine, group, "databytes")[:1]).split()
        return int(words[0]) if words and words[0].isdigit() else self.settings.databytes

    def headers_end_hook(self) -> Callable[[MessageReceiver], Step] | None:
        """What the receiver calls when the header block has arrived (None: no plugin listens)."""
        return self._headers_end if self.engine.hooks.has("data_headers_end") else None

    def _after_data(self, result: HookResult) -> Step:
        self.sync_point = False
        if self._deny(_DATA, result):
            if result.code is not DONE and not self.closed:
                self.reset_transaction()
            return None
        if self.transaction.sender is None:
            self.respond(503, "MAIL first", "5.5.1")
            return None
        if not self.transaction.recipients:
            self.respond(503, "RCPT first", "5.5.1")
            return None
        self.receiver = MessageReceiver(self.transaction, self.settings, self.headers_end_hook(),
                                        databytes=self.databytes())
        self.respond(354, "go ahead, end data with <CR><LF>.<CR><LF>", None)
        self.transport.start_data(self.receiver)
        return None

    def _headers_end(self, receiver: MessageReceiver) -> Step:
        return self._run("data_headers_end", lambda result: self._after_headers_end(receiver, result))

    def _after_headers_end(self, receiver: MessageReceiver, result: HookResult) -> Step:
        if result.value is FAULT:
            # the message is still arriving: a reply now would be read as the answer to the final dot
            receiver.fault = True
            return None
        self._deny(_DATA_HEADERS_END, result)
        return None

    def message_received(self, receiver: Receiver) -> Step:
        """The terminator (or a BDAT chunk) arrived: once ``data_headers_end`` answered, check the message."""
        if isinstance(receiver, ChunkDiscarder):
            return self.chunking.discarded(receiver)
        assert isinstance(receiver, MessageReceiver)
        if not receiver.last:
            return self.chunking.received(receiver)
        self.receiver = None
        if self.engine.observer is not None:
            self.engine.observer.message_received(self)
        if receiver.waiting is not None:
            return receiver.waiting.addCallback(lambda _: self._check_message(receiver))
        return self._check_message(receiver)

    def _check_message(self, receiver: MessageReceiver) -> Step:
        """Refuse a broken message, else add our headers and run data_post and queue."""
        if self.closed:
            return None
        refusal = receiver.verdict()
        if refusal is not None:
            self.log_refusal(receiver)
            self.respond(refusal.code, refusal.text, refusal.enhanced)
            self.reset_transaction()
            return None
        if self.engine.hooks.has("data_post_headers"):
            # awaited (answer ignored): SPF, DKIM and DMARC store their Authentication-Results here
            return self._run("data_post_headers", lambda _: self._received_line())
        return self._received_line()

    def _received_line(self) -> Step:
        """Ask the ``received_line`` plugins for our Received line (their arguments made only for them)."""
        if not self.engine.hooks.has("received_line"):
            return self._add_headers(NO_ANSWER)
        connection = self.connection
        smtp = "ESMTP" if connection.hello == "ehlo" else "SMTP"
        auth = (f"(smtp-auth username {connection.auth_user}, mechanism {connection.auth_mechanism})\n"
                if connection.auth_user else "")
        ssl = f"({connection.tls.cipher} encrypted) " if connection.tls else ""
        return self._run("received_line", self._add_headers, smtp, auth, ssl)

    def log_refusal(self, receiver: MessageReceiver) -> None:
        """Log what the client is not told about a refused message."""
        if receiver.spool_error is not None:
            self.engine.log(LOGERROR, f"cannot store message: {receiver.spool_error}",
                            transaction=self.transaction)

    def _add_headers(self, result: HookResult) -> Step:
        transaction = self.transaction
        settings = self.settings
        authserv_id = settings.auth_results_id
        if authserv_id != "none":
            neutralize_forged_results(authserv_id, transaction.header, transaction.raw_header)
            transaction.prepend_header("Authentication-Results", authentication_results(
                authserv_id, self.connection, transaction.auth_results))
        line = result.value if result.code is OK and result.value else result.message \
            if result.code is OK else None
        transaction.prepend_header("Received", str(line) if line else received_line(settings.me,
                                                                                    self.connection))
        return self._run("data_post", self._after_data_post)

    def _after_data_post(self, result: HookResult) -> Step:
        if self._deny(_DATA_POST, result):
            if not self.closed:
                self.reset_transaction()
            return None
        return self._run("queue_pre", self._after_queue_pre)

    def _after_queue_pre(self, result: HookResult) -> Step:
        if result.code is DONE or self._deny(_QUEUE, result):
            self.reset_transaction()
            return None
        return self._run("queue", self._after_queue)

    def _after_queue(self, result: HookResult) -> Step:
        transaction = self.transaction
        if result.code is OK:
            self.respond(250, result.message or "Queued", "2.6.0")
            self.transport.message_accepted()
            if self.engine.logs(LOGINFO):
                self.engine.log(LOGINFO, f"queued message from {transaction.sender} for "
                                f"{len(transaction.recipients)} recipients by {result.plugin}",
                                transaction=transaction)
        elif result.code is DECLINED:
            self._reply(_QUEUE.declined, result._replace(message=None))  # type: ignore[arg-type]
        elif result.code is not DONE:
            self._deny(_QUEUE, result)
        if self.engine.hooks.has("queue_post"):
            self.transport.flush()  # queue_post runs after the client has its reply
            self.engine.hooks.run("queue_post", transaction)
        self.reset_transaction()
        return None

    # RSET, NOOP, VRFY, HELP, QUIT
    def rset(self, rest: str) -> Step:
        """RSET: forget the transaction."""
        self.reset_transaction()
        self.respond(250, "OK", "2.0.0")
        return None

    def noop(self, rest: str) -> Step:
        """NOOP."""
        return self._run("noop", self._after_noop)

    def _after_noop(self, result: HookResult) -> Step:
        if not self._deny(_NOOP, result):
            self.respond(250, "OK", "2.0.0")
        return None

    def vrfy(self, rest: str) -> Step:
        """VRFY: 252 unless a plugin knows better."""
        return self._run("vrfy", self._after_vrfy)

    def _after_vrfy(self, result: HookResult) -> Step:
        if self._deny(_VRFY, result):
            return None
        if result.code is OK:
            self.respond(250, result.message or "User OK", "2.1.5")
        else:
            self.respond(252, "Just try sending a mail and we'll see how it turns out ...", "2.1.5")
        return None

    def help(self, rest: str) -> Step:
        """HELP."""
        return self._run("help", self._after_help, rest)

    def _after_help(self, result: HookResult) -> Step:
        if self._deny(_HELP_HOOK, result):
            return None
        default = _HELP.format(version="" if self.settings.greeting else __version__, me=self.settings.me)
        self.respond(214, result.message or default, "2.0.0")
        return None

    def quit(self, rest: str) -> Step:
        """QUIT: say goodbye and close."""
        return self._run("quit", self._after_quit)

    def _after_quit(self, result: HookResult) -> Step:
        if result.code is not DONE:
            goodbye = f"{self.settings.me} closing connection. Have a wonderful day."
            self.respond(221, result.message or goodbye,
                         "2.0.0")
        self.disconnect()
        return None
