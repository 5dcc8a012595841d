"""milter: run a Sendmail milter (OpenDKIM, rspamd's proxy, clamav-milter ...) at every SMTP stage.

Each SMTP connection gets its own connection to the milter (TCP or a Unix
socket). The milter protocol is spoken in version 6 with option
negotiation (an older milter is spoken to in its own version), and the
milter hears each stage from the hook that matches it:

==================  ==========================================================
hook                milter events
==================  ==========================================================
``connect``         option negotiation, ``SMFIC_CONNECT`` (and its macros)
``helo``/``ehlo``   ``SMFIC_HELO``
``mail``            ``SMFIC_MAIL`` with the ESMTP arguments
``rcpt``            ``SMFIC_RCPT``
``data``            ``SMFIC_DATA``
``data_post``       each header, end of headers, the body in 64 KiB chunks with CRLF line
                    ends (streamed from the spool), end of message
RSET, new MAIL,     ``SMFIC_ABORT``
end of message
disconnect          ``SMFIC_QUIT``
==================  ==========================================================

The milter's answers are carried out where they come: *continue*; *accept*
(no more events for the connection, or for the message); *reject* and
*tempfail* (``550 5.7.1 Command rejected``, ``451 4.7.1 Service unavailable``,
or the milter's own ``SMFIR_REPLYCODE`` reply, exactly); *discard* (250,
then the message is dropped, never delivered); *shutdown* (421, closed).
A refusal at connect or HELO refuses every later command too. At the end of
the message the changes it asks for are applied to the transaction: add,
insert, change and delete headers, replace the body (streamed to a new
spool), add and delete recipients, change the sender, and quarantine
(``queue/quarantine`` files the message).

List ``milter`` before the plugins that accept recipients (``rcpt_ok``):
the first plugin that accepts a recipient ends the ``rcpt`` chain. Several
milters run in a row as ``milter``, ``milter:2`` ... (each sees the
changes of the ones before it).

When the milter is down, closes, answers nonsense or is slower than
``timeout`` (per command) or ``message_timeout`` (for the whole message),
``on_error`` decides, for that command and the rest of the connection:
``defer`` (default; 451 4.7.1), ``accept`` (go on without it; the message
gets ``X-Not-Scanned``) or ``reject``. ``reject 0`` only logs what the milter
would refuse (a test run); ``reject naughty`` leaves it to ``naughty``.

The outcome is in ``transaction.notes["milter"]`` (or ``"milter:2"``):
``{"result": action, "stage": ..., "reply": ..., "changes": [...]}``.

Arguments:

``[socket]`` (required)
    ``inet:PORT@HOST``, ``host:port``, ``unix:/path`` or ``/path``.
``protocol 6|4|3|2``
    the highest protocol version to offer (default 6).
``timeout``, ``message_timeout``, ``connect_timeout``
    default 30s, 300s, 5s.
``on_error defer|accept|reject``, ``reject 1|0|naughty``, ``max_size SIZE`` (larger messages
skip the milter; default no limit), ``skip_relay_clients 1``, ``loglevel``
    see above and docs/content-scanning.md.
``reject_type temp``
    soft bounce: the milter's 5xx refusals are sent as 4xx (a new milter can be tried without
    losing mail).

qpsmtpd's ``milter`` spoke protocol version 2 only (its issue #329).

config/plugins::

    milter inet:8891@127.0.0.1
    milter:2 unix:/run/rspamd/milter.sock on_error accept
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import CancelledError

from qptwisted import (
    DECLINED,
    DENY,
    DENYSOFT,
    DENYSOFT_DISCONNECT,
    LOGINFO,
    LOGWARN,
    Address,
    AddressError,
    Code,
    Connection,
    HookAnswer,
    Reply,
    Transaction,
    __version__,
    arg,
)
from qptwisted.lib import milter as protocol
from qptwisted.lib.milter import Changes, MilterClient, Verdict
from qptwisted.lib.policy import reject_argument
from qptwisted.lib.scanner import (
    ScannerAddress,
    ScannerError,
    ScannerPlugin,
    address_argument,
    connect,
    discard_answer,
    on_error_argument,
    within,
)

_CONNECTION_STAGES = ("connect", "helo")


class _Session:
    """The milter side of one SMTP connection."""

    __slots__ = ("client", "standing", "in_transaction", "message_done", "failed")

    def __init__(self) -> None:
        self.client: MilterClient | None = None
        #: the answer every later command gets (after accept, reject or an error at connection level)
        self.standing: Any = None
        self.in_transaction = False
        #: no more events for this message (accepted or discarded)
        self.message_done = False
        self.failed = ""

    def drop(self) -> None:
        """Stop talking to the milter for this connection."""
        if self.client is not None:
            self.client.connection.close()
            self.client = None


class Milter(ScannerPlugin):
    """A milter client, driven from the hooks."""

    name = "milter"
    daemon = "milter"

    milter_socket: ScannerAddress = address_argument(
        None, help="inet:PORT@HOST, host:port, unix:/path or /path", positional=True)
    protocol: str = arg.choice(("6", "4", "3", "2"), "6", "the highest milter protocol version to offer")
    scan_timeout: float = arg.duration(30, "how long the milter may take to answer one command",
                                       aliases=("timeout",))
    message_timeout: float = arg.duration(300, "how long the whole message stage may take")
    reject: str = reject_argument("1", "the milter's refusals: 1 carry out, 0 only log, naughty: leave them "
                                  "to the naughty plugin")
    on_error: str = on_error_argument("defer")

    def register(self, *args: str) -> None:
        """Sessions by connection id."""
        self.sessions: dict[int, _Session] = {}

    def register_hook(self, hook: str, method: Callable[..., Any], unshift: bool = False) -> None:
        """Register with a hook timeout above the milter's own timeouts."""
        timeout = self.connect_timeout + self.scan_timeout + self.message_timeout + 10
        self.engine.hooks.register(hook, self.plugin_name, method, timeout, unshift, bool(self.fail_open))

    def close(self) -> None:
        for session in self.sessions.values():
            session.drop()
        self.sessions.clear()

    # -- the hooks ------------------------------------------------------------------------------
    async def hook_connect(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        session = self.sessions[connection.id] = _Session()

        async def start(client: MilterClient | None) -> Verdict:
            link = await connect(self, self.milter_socket, self.connect_timeout)
            session.client = client = MilterClient(self, link, self.scan_timeout, int(self.protocol))
            await client.negotiate()
            name = connection.remote_host or f"[{connection.remote_ip}]"
            data = protocol.connect_data(name, connection.remote_ip, connection.remote_port)
            return await client.event(protocol.SMFIC_CONNECT, data, protocol.SMFIP_NOCONNECT,
                                      protocol.SMFIP_NR_CONN, self.connect_macros(connection))

        return await self.step(transaction, "connect", start, session)

    async def hook_helo(self, transaction: Transaction, host: str) -> HookAnswer:
        connection = transaction.connection
        tls = connection.tls
        macros = {"tls_version": tls.version, "cipher": tls.cipher} if tls is not None else {}
        data = protocol.strings(host)
        return await self.step(transaction, "helo", lambda client: client.event(  # type: ignore[union-attr]
            protocol.SMFIC_HELO, data, protocol.SMFIP_NOHELO, protocol.SMFIP_NR_HELO, macros))

    hook_ehlo = hook_helo

    async def hook_mail(self, transaction: Transaction, sender: Address, **params: Any) -> HookAnswer:
        session = self.sessions.get(transaction.connection.id)
        if session is not None:
            session.in_transaction, session.message_done = True, False
        connection = transaction.connection
        macros = {"i": self.queue_id(transaction), "mail_addr": sender.address, "mail_host": sender.host,
                  "mail_mailer": "smtp", "auth_type": connection.auth_mechanism,
                  "auth_authen": connection.auth_user}
        data = protocol.mail_arguments(f"<{sender.address}>", params)
        return await self.step(transaction, "mail", lambda client: client.event(  # type: ignore[union-attr]
            protocol.SMFIC_MAIL, data, protocol.SMFIP_NOMAIL, protocol.SMFIP_NR_MAIL, macros))

    async def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        macros = {"rcpt_addr": rcpt.address, "rcpt_host": rcpt.host, "rcpt_mailer": "smtp"}
        data = protocol.mail_arguments(f"<{rcpt.address}>", params)
        return await self.step(transaction, "rcpt", lambda client: client.event(  # type: ignore[union-attr]
            protocol.SMFIC_RCPT, data, protocol.SMFIP_NORCPT, protocol.SMFIP_NR_RCPT, macros))

    async def hook_data(self, transaction: Transaction) -> HookAnswer:
        return await self.step(transaction, "data", lambda client: client.event(  # type: ignore[union-attr]
            protocol.SMFIC_DATA, b"", protocol.SMFIP_NODATA, protocol.SMFIP_NR_DATA,
            {"i": self.queue_id(transaction)}))

    async def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        session = self.sessions.get(transaction.connection.id)
        if session is None:
            return DECLINED
        if session.failed and self.on_error == "accept":
            transaction.header.add("X-Not-Scanned", f"{self.plugin_name} on {self.me}: {session.failed}")
        reason = self.skip_reason(transaction)
        if reason is not None and session.client is not None and not session.message_done:
            session.client.abort()
            session.in_transaction, session.message_done = False, True
            return self.skipped(transaction, reason)
        changes: list[Changes] = []

        async def message(client: MilterClient | None) -> Verdict:
            assert client is not None
            verdict, found = await within(self, self.message_timeout,
                                          client.message(transaction, {"i": self.queue_id(transaction)}),
                                          "milter message")
            changes.append(found)
            return verdict

        answer = await self.step(transaction, "message", message)
        if changes:
            if answer is DECLINED:
                self.apply(transaction, changes[0])
            changes[0].discard_body()
        return answer

    def hook_reset_transaction(self, transaction: Transaction) -> None:
        session = self.sessions.get(transaction.connection.id)
        if session is None or not session.in_transaction:
            return
        session.in_transaction = session.message_done = False
        if session.client is not None and session.standing is None:
            try:
                session.client.abort()
            except ScannerError:
                session.drop()

    def hook_disconnect(self, transaction: Transaction) -> None:
        session = self.sessions.pop(transaction.connection.id, None)
        if session is not None and session.client is not None:
            try:
                session.client.quit()  # QUIT, then close once it is written
            except ScannerError:
                session.drop()
            session.client = None

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        return discard_answer(self, transaction)

    # -- running one stage ------------------------------------------------------------------------
    async def step(self, transaction: Transaction, stage: str,
                   run: Callable[[MilterClient | None], Coroutine[Any, Any, Verdict]],
                   session: _Session | None = None) -> HookAnswer:
        """Run ``stage`` against the milter and turn its verdict into this hook's answer."""
        session = session or self.sessions.get(transaction.connection.id)
        if session is None:
            return DECLINED
        if session.standing is not None:
            return session.standing
        if session.message_done and stage not in _CONNECTION_STAGES:
            return DECLINED
        if session.client is None and stage != "connect":
            return DECLINED
        try:
            verdict = await run(session.client)
        except CancelledError:
            session.drop()
            raise
        except Exception as err:  # a milter that breaks the protocol must not become a traceback
            why = str(err) if isinstance(err, ScannerError) else f"{type(err).__name__}: {err}"
            return self.broken(session, transaction, stage, why)
        return self.decide(session, transaction, stage, verdict)

    def decide(self, session: _Session, transaction: Transaction, stage: str, verdict: Verdict) -> HookAnswer:
        """The hook's answer for the milter's verdict at ``stage``."""
        action = verdict.action
        note = {"stage": stage}
        if verdict.reply is not None and verdict.refuses:
            note["reply"] = str(verdict.reply)
        if action in ("continue", "skip"):
            if stage == "message":
                self.note(transaction, "continue", **note)
            return DECLINED
        self.log(LOGINFO, f"{action} at {stage}" + (f": {verdict.reply}" if "reply" in note else ""))
        self.note(transaction, action, **note)
        if action == "accept":
            if stage in _CONNECTION_STAGES:
                session.standing = DECLINED
                session.drop()
            session.message_done = True
            return DECLINED
        if action == "discard":
            if stage in _CONNECTION_STAGES:
                self.log(LOGWARN, f"discard is not allowed at {stage}; ignored")
                return DECLINED
            session.message_done = True
            transaction.notes["discard"] = f"{self.plugin_name} at {stage}"
            return DECLINED
        reply = verdict.reply or Reply(550, "5.7.1", "Command rejected")
        if reply.code >= 500 and self.reject_type in ("temp", "soft"):  # soft bounce: try a new milter safely
            reply = reply._replace(code=reply.code - 100, enhanced=f"4{(reply.enhanced or '5.7.1')[1:]}")
        code: Code = DENY if reply.code >= 500 else DENYSOFT
        if action == "shutdown":
            code = DENYSOFT_DISCONNECT
        answer = (code, reply)
        if stage in _CONNECTION_STAGES or action == "shutdown":
            session.standing = answer
            session.drop()
        if self.reject == "0":
            self.log(LOGINFO, f"would refuse at {stage} ({reply}); reject 0: only logged")
            return DECLINED
        if self.reject == "naughty":
            return self.store_deferred_reject(transaction, reply.text)
        return answer

    def broken(self, session: _Session, transaction: Transaction, stage: str, why: str) -> HookAnswer:
        """The milter failed at ``stage``: ``on_error`` answers now and for the rest of the connection."""
        session.drop()
        session.failed = f"{why} (at {stage})"
        answer = self.unavailable(transaction, session.failed, header=False)
        session.standing = answer
        return answer

    # -- changes and macros ------------------------------------------------------------------------
    def apply(self, transaction: Transaction, changes: Changes) -> None:
        """Carry out what the milter asked at the end of the message."""
        kinds = changes.kinds
        header = transaction.header
        for op, index, name, value in changes.headers:
            try:
                if op == "add":
                    header.add(name, value)
                elif op == "insert":
                    header.insert(index, name, value)
                elif value:
                    header.replace(name, value, occurrence=index)
                else:
                    header.remove(name, occurrence=index)
            except ValueError as err:
                self.log(LOGWARN, f"ignored header change {op} {name!r}: {err}")
        for path, _ in changes.add_recipients:
            address = self.address(path, recipient=True)
            if address is not None:
                transaction.add_recipient(address)
        for path in changes.delete_recipients:
            address = self.address(path, recipient=True)
            if address is not None:
                transaction.remove_recipient(address)
        if changes.sender is not None:
            sender = self.address(changes.sender[0], recipient=False)
            if sender is not None:
                transaction.sender = sender
        if changes.body is not None:
            old, transaction.body = transaction.body, changes.body
            changes.body = None
            if old is not None:
                old.close()
        if changes.quarantine:
            transaction.notes["quarantine"] = f"{self.plugin_name}: {changes.quarantine}"
        if not transaction.recipients:
            transaction.notes["discard"] = f"{self.plugin_name}: every recipient was deleted"
        note = transaction.notes.get(self.plugin_name)
        if isinstance(note, dict) and kinds:
            note["changes"] = kinds
            self.log(LOGINFO, f"changes: {', '.join(kinds)}")

    def address(self, path: str, recipient: bool) -> Address | None:
        """An address the milter named (angle brackets optional); None (logged) if it is not one."""
        path = path.strip()
        if not path.startswith("<"):
            path = f"<{path}>"
        try:
            return Address.parse(path, allow_postmaster=recipient, allow_null=not recipient, utf8=True)
        except AddressError as err:
            self.log(LOGWARN, f"ignored address {path!r} from the milter: {err}")
            return None

    def connect_macros(self, connection: Connection) -> dict[str, str | None]:
        """The macros of the connect stage, as Postfix sends them."""
        name = connection.remote_host or "unknown"
        return {"j": self.me, "daemon_name": "qptwisted", "daemon_addr": connection.local_ip,
                "if_addr": connection.local_ip, "client_addr": connection.remote_ip,
                "client_port": str(connection.remote_port), "client_name": name, "client_ptr": name,
                "_": f"{name} [{connection.remote_ip}]", "v": f"qptwisted {__version__}"}

    @staticmethod
    def queue_id(transaction: Transaction) -> str:
        """The ``i`` macro: this transaction's id."""
        return f"{transaction.connection.id}.{transaction.id}"
