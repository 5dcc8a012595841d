"""Shared machinery of the queue plugins that speak SMTP or LMTP downstream.

Not a plugin itself: :class:`RelayQueue` declares the common arguments, keeps a
pool of reusable connections (closed with the plugin), runs one mail transaction per message and
turns the downstream's per-recipient replies into one answer for the client.

The per-recipient rule (both plugins): the client gets 250 only if *every*
recipient was accepted by the downstream. If any recipient is refused at
RCPT the message is not sent at all (RSET), so nothing is delivered twice
when the client retries. If a recipient fails after the message was sent
(LMTP gives one reply per recipient), the others are already delivered; the
client still gets a refusal so the failed recipient is not lost, and the log
names the recipients that will see a duplicate when the client retries. The
refusal is a 452 (DENYSOFT) if any failure was temporary, or the connection
failed or timed out, and a 552 (DENY) if every failure was permanent; its
text names the refused recipients and the downstream's reply.

ESMTP (``docs/esmtp.md``): the message goes with BDAT when the downstream
offers CHUNKING (no dot-stuffing pass). DSN parameters (``RET``, ``ENVID``,
each recipient's ``NOTIFY``, ``ORCPT``) are passed on when it offers DSN. A
message the client sent with REQUIRETLS is relayed only over TLS (STARTTLS
whatever ``starttls=`` says), with ``REQUIRETLS`` on MAIL when the downstream
offers it; without TLS the client gets ``452 4.7.10``. A BINARYMIME message
needs a downstream with CHUNKING and BINARYMIME, else ``554 5.6.3``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IStreamClientEndpoint

from qptwisted import DENY, DENYSOFT, LOGERROR, LOGINFO, LOGWARN, OK, Plugin, Transaction, arg
from qptwisted.lib.smtpclient import (
    NO_REPLY,
    ClientPool,
    DeliveryResult,
    Envelope,
    SMTPClient,
    Timeouts,
    connect_client,
    parse_target,
    target_endpoint,
)

REQUIRETLS_REFUSED = "REQUIRETLS: the downstream offers no TLS, not relaying in clear (#4.7.10)"
BINARY_REFUSED = "The downstream cannot take BINARYMIME and the message cannot be converted (#5.6.3)"


class RequireTLSError(ConnectionError):
    """A REQUIRETLS message and a downstream without TLS."""

_QUEUED_AS = re.compile(r"queued as ([A-Za-z0-9]+)", re.IGNORECASE)


class RelayQueue(Plugin):
    """Base of ``queue/smtp-forward`` and ``queue/lmtp``; see the module docstring."""

    lmtp: ClassVar[bool] = False
    default_port: ClassVar[int] = 25
    #: the hook may take as long as the slowest step allows (our own timeouts answer first)
    timeout: ClassVar[float | None] = 700.0

    #: the reactor used to connect (tests may replace it); timers use the engine clock
    reactor: Any = None

    target: str = arg.str(help="the downstream: HOST, HOST:PORT, [IPv6]:PORT or /path/to/socket",
                          positional=True)
    downstream_port: int | None = arg.int(None, "its port when TARGET names none (qpsmtpd's HOST PORT)",
                                          positional=True, aliases=("port",))
    starttls: str = arg.choice(("no", "try", "require"), "try", "use STARTTLS when offered (try), "
                               "insist on it (require), or never (no)")
    verify: bool = arg.bool(False, "check the downstream's certificate")
    cafile: Path | None = arg.path(None, "the CA certificates to check it against (default: the system's)")
    tls_name: str | None = arg.str(None, "the name its certificate must carry (default: HOST)")
    xclient: bool = arg.flag("send Postfix XCLIENT with the real client (a connection per message)")
    xforward: bool = arg.flag("send Postfix XFORWARD with the real client")
    reuse: int = arg.int(2, "idle connections kept for the next messages (0: none)")
    idle: float = arg.duration(10, "how long an idle connection is kept")
    connect_timeout: float = arg.duration(30, "seconds to connect")
    command_timeout: float = arg.duration(300, "seconds for each reply", aliases=("timeout",))
    data_timeout: float = arg.duration(600, "seconds for the reply after the message")
    helo: str | None = arg.str(None, "the name in EHLO/LHLO (default: config me)")

    def register(self, *args: str) -> None:
        """Work out the downstream and set up the connection pool."""
        self.host, self.port = parse_target(self.target, self.downstream_port or self.default_port)
        self.server_name = self.tls_name or self.host
        self.use_xclient, self.use_xforward = self.xclient, self.xforward
        self.helo_name = self.helo or self.engine.settings.me
        self.timeouts = Timeouts(connect=self.connect_timeout, command=self.command_timeout,
                                 data=self.data_timeout)
        self.pool = ClientPool(self.clock, self.reuse, self.idle)

    def close(self) -> Deferred[Any]:
        """Close the idle connections of the pool."""
        return DeferredList(self.pool.close())

    # -- connecting ------------------------------------------------------------
    def endpoint(self) -> IStreamClientEndpoint:
        """The endpoint of the downstream."""
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        return target_endpoint(reactor, self.host, self.port, self.timeouts.connect)

    def tls_context(self) -> Any:
        """The client TLS options: verified against ``cafile`` (or the system) if ``verify``."""
        from twisted.internet import ssl

        if not self.verify:
            return ssl.CertificateOptions()
        if self.cafile:
            with open(self.cafile, "rb") as handle:
                trust: Any = ssl.Certificate.loadPEM(handle.read())
        else:
            trust = ssl.platformTrust()
        return ssl.optionsForClientTLS(self.server_name, trustRoot=trust)

    async def connect(self, transaction: Transaction) -> SMTPClient:
        """A fresh connection: greeting, EHLO, STARTTLS, XCLIENT as configured.

        A REQUIRETLS message insists on STARTTLS whatever ``starttls=`` says.
        """
        client = await connect_client(self.endpoint(), self.clock, self.helo_name, self.lmtp, self.timeouts)
        try:
            if (self.starttls != "no" or transaction.requiretls) and "STARTTLS" in client.extensions:
                await client.starttls(self.tls_context())
            elif transaction.requiretls:
                raise RequireTLSError("downstream does not offer STARTTLS (the message says REQUIRETLS)")
            elif self.starttls == "require":
                raise ConnectionError("downstream does not offer STARTTLS (starttls=require)")
            if self.use_xclient:
                await client.xclient(self.client_attributes(transaction, xclient=True))
        except BaseException:
            client.abort()
            raise
        return client

    def client_attributes(self, transaction: Transaction, xclient: bool) -> dict[str, str]:
        """NAME, ADDR, PORT, HELO, PROTO, LOGIN (XCLIENT) or SOURCE, IDENT (XFORWARD) of the real client.

        As Postfix writes them: an IPv6 address prefixed ``IPV6:``, unknown
        values ``[UNAVAILABLE]``; SOURCE is LOCAL for relay clients (our own
        users), REMOTE otherwise; IDENT is the transaction's id here. A
        value longer than Postfix takes (255) is sent as ``[UNAVAILABLE]``
        rather than have every message of that client refused.
        """
        connection = transaction.connection
        ip = connection.remote_ip
        attributes = {
            "NAME": connection.remote_host or "[UNAVAILABLE]",
            "ADDR": f"IPV6:{ip}" if ":" in ip else ip,
            "PORT": str(connection.remote_port),
            "HELO": connection.hello_host or "[UNAVAILABLE]",
            "PROTO": "ESMTP" if connection.hello == "ehlo" else "SMTP",
        }
        if xclient:
            if connection.auth_user:
                attributes["LOGIN"] = connection.auth_user
        else:
            attributes["SOURCE"] = "LOCAL" if connection.relay_client else "REMOTE"
            attributes["IDENT"] = f"{connection.id}.{transaction.id}"
        return {key: value if len(value) <= 255 else "[UNAVAILABLE]" for key, value in attributes.items()}

    # -- the queue hook ---------------------------------------------------------
    def envelope(self, transaction: Transaction, client: SMTPClient) -> Envelope:
        """The downstream envelope of ``transaction``, with the DSN and REQUIRETLS parameters it can take."""
        assert transaction.sender is not None
        recipients = [rcpt.address for rcpt in transaction.recipients]
        params = []
        addresses = [transaction.sender.address, *recipients]
        if not all(address.isascii() for address in addresses) and "SMTPUTF8" in client.extensions:
            params.append("SMTPUTF8")
        if transaction.requiretls and "REQUIRETLS" in client.extensions:
            params.append("REQUIRETLS")
        rcpt_params: dict[str, list[str]] = {}
        if "DSN" in client.extensions:
            if transaction.dsn is not None:
                params += transaction.dsn.params()
            rcpt_params = {rcpt.address: rcpt.dsn.params() for rcpt in transaction.recipients if rcpt.dsn}
        elif transaction.dsn is not None or any(rcpt.dsn for rcpt in transaction.recipients):
            self.log(LOGINFO, f"{self.describe()} offers no DSN: the DSN parameters are not passed on")
        size = len(transaction.header_bytes()) + transaction.body_length
        return Envelope(transaction.sender.address, recipients, params, size, rcpt_params, transaction.binary)

    def hook_queue(self, transaction: Transaction) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.deliver(transaction))

    async def deliver(self, transaction: Transaction) -> tuple[Any, str]:
        """Hand the message on and decide the answer (the rule in the module docstring)."""
        client: SMTPClient | None = None
        try:
            if not self.use_xclient:
                client = await self.pool.take()
                if client is not None and transaction.requiretls and not client.tls:
                    self.pool.give_back(client)
                    client = None
            if client is None:
                client = await self.connect(transaction)
            if transaction.binary and not {"CHUNKING", "BINARYMIME"} <= client.extensions.keys():
                self.pool.give_back(client)
                self.log(LOGWARN, f"{self.describe()} offers no BINARYMIME: refusing a binary message")
                return DENY, BINARY_REFUSED
            if self.use_xforward:
                await client.xforward(self.client_attributes(transaction, xclient=False))
            result = await client.send_message(self.envelope(transaction, client), transaction.iter_message())
        except RequireTLSError as err:
            self.log(LOGWARN, f"delivery to {self.describe()}: {err}")
            return DENYSOFT, REQUIRETLS_REFUSED
        except CancelledError:
            if client is not None:
                client.abort()
            self.log(LOGERROR, f"delivery to {self.describe()} cancelled (hook timeout)")
            raise
        except Exception as err:
            if client is not None:
                client.abort()
            self.log(LOGERROR, f"delivery to {self.describe()} failed: {type(err).__name__}: {err}")
            return DENYSOFT, "Downstream mail server unavailable, try again later (#4.4.1)"
        self.pool.give_back(client)
        return self.verdict(transaction, result)

    def describe(self) -> str:
        """The downstream, for log lines."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def verdict(self, transaction: Transaction, result: DeliveryResult) -> tuple[Any, str]:
        """All delivered: 250. Otherwise 452 if any failure is temporary, else 552."""
        transaction.notes[f"{self.name}_results"] = {
            rcpt: str(result.final.get(rcpt) or reply) for rcpt, reply in result.rcpt.items()}
        delivered = result.delivered
        if result.rcpt and len(delivered) == len(result.rcpt):
            reply = result.data or next(iter(result.final.values()))
            match = _QUEUED_AS.search(reply.text)
            transaction.notes["queue_id"] = match.group(1) if match else reply.text
            self.log(LOGINFO, f"delivered to {self.describe()}: {reply}")
            return OK, f"Queued! {reply.text}".rstrip()
        failed = result.failed or {rcpt: NO_REPLY for rcpt in result.rcpt}
        details = "; ".join(f"<{rcpt}>: {reply}" for rcpt, reply in failed.items())
        temporary = any(reply.code < 500 for reply in failed.values())
        self.log(LOGWARN, f"downstream {self.describe()} refused {details}" +
                 (f"; already delivered (duplicates on retry): {', '.join(delivered)}" if delivered else ""))
        if temporary:
            return DENYSOFT, f"Downstream temporarily refused {details}"
        return DENY, f"Downstream refused {details}"
