"""rspamd: check each message with rspamd's HTTP protocol and carry out the action it recommends.

At ``data_post`` the message is POSTed to rspamd's ``/checkv2`` (TCP or a
Unix socket) with ``treq``, streamed from the spool with flow control, and
with the envelope in the request headers: ``From``, one ``Rcpt`` per
recipient, ``IP``, ``Helo``, ``Hostname``, ``User`` (the AUTH user),
``Queue-Id``, ``MTA-Name`` and, over TLS, ``TLS-Cipher`` and ``TLS-Version``.
rspamd's JSON answer decides:

====================  ================================================================
rspamd's action        what happens
====================  ================================================================
``reject``             refused: ``550 5.7.1`` with rspamd's SMTP message (``reject 0``
                       only logs; ``reject naughty`` leaves it to ``naughty``)
``soft reject``        ``451 4.7.1`` (``soft_reject no`` ignores it)
``greylist``           ``451 4.7.1 Greylisted`` (``greylist no`` ignores it)
``rewrite subject``    the Subject rspamd wrote (or ``subject_prefix`` before the old one)
``add header``         ``X-Spam: Yes`` (``spam_header`` names the field)
``quarantine``         accepted and filed by ``queue/quarantine``
``discard``            answered 250 and dropped (never delivered)
``no action``          accepted
====================  ================================================================

Every scanned message also gets ``X-Rspamd-Action`` and ``X-Rspamd-Score``
(``add_headers always``, the default; ``spam`` only for other actions than
``no action``; ``never``). Incoming fields of those names and the
``spam_header`` are removed first, so a forged one never passes for ours.
The header changes rspamd asks for (``milter.remove_headers`` and
``milter.add_headers``, as its ``milter_headers`` module makes them) are
applied, removals first, with rspamd's positions; a ``dkim-signature`` it
returns (its ``dkim_signing`` module) is put on top as ``DKIM-Signature``.

The result is in ``transaction.notes["rspamd"]``: ``{"result": action,
"score", "required", "symbols": [...], ...}``.

Arguments (``name value``):

``rspamd_socket host:port|/path``
    rspamd's normal worker (default ``127.0.0.1:11333``).
``reject 1|0|naughty``, ``soft_reject yes|no``, ``greylist yes|no``,
``spam_header NAME``, ``subject_prefix TEXT``, ``add_headers always|spam|never``,
``milter_headers yes|no``, ``dkim yes|no``
    see above.
``on_error defer|accept|reject``
    rspamd down or slow: ``accept`` (default) logs and adds ``X-Not-Scanned``.
``max_size SIZE``
    larger messages are not scanned (default 20M; rspamd's own limit is 50M).
``connect_timeout``, ``timeout`` (default 5s, 60s), ``skip_relay_clients 1``,
``reject_type perm|temp``, ``loglevel``
    as for every scanner (docs/content-scanning.md).

qpsmtpd has no rspamd plugin (its issue #293); this one follows Haraka's
and adds the milter header changes, DKIM signatures and streaming.

config/plugins::

    rspamd rspamd_socket 127.0.0.1:11333 reject 1
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from qptwisted import DECLINED, DENYSOFT, LOGINFO, Headers, HookAnswer, Reply, Transaction, arg
from qptwisted.lib.policy import reject_argument
from qptwisted.lib.scanner import (
    MessageBodyProducer,
    ScannerAddress,
    ScannerError,
    ScannerPlugin,
    address_argument,
    discard_answer,
    on_error_argument,
    scanner_reactor,
    size_argument,
)

_OUR_FIELDS = ("X-Rspamd-Action", "X-Rspamd-Score")


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Every request goes to the configured rspamd, over TCP or a Unix socket."""

    def __init__(self, reactor: Any, address: ScannerAddress, timeout: float) -> None:
        self.reactor, self.address, self.timeout = reactor, address, timeout

    def endpointForURI(self, uri: Any) -> Any:  # noqa: N802 - Twisted's interface
        return self.address.endpoint(self.reactor, self.timeout)


def insert_position(header: Headers, order: int) -> int:
    """rspamd's ``order``: 0 is the top, -1 after the last field, -2 before the last ..."""
    return order if order >= 0 else max(0, len(header) + order + 1)


def remove_fields(header: Headers, name: str, which: int) -> None:
    """rspamd's ``remove_headers``: 0 every ``name`` field, N the N-th, -N the N-th from the end."""
    if which == 0:
        header.remove(name)
        return
    count = len(header.get_all(name, []))
    header.remove(name, occurrence=which if which > 0 else count + which + 1)


def header_values(spec: Any) -> Iterable[tuple[str, int | None]]:
    """The ``(value, order)`` pairs of one ``add_headers`` entry (a string, an object, or a list)."""
    for item in spec if isinstance(spec, list) else [spec]:
        if isinstance(item, dict) and isinstance(item.get("value"), str):
            order = item.get("order", item.get("index"))
            yield item["value"], int(order) if isinstance(order, int | float) else None
        elif isinstance(item, str):
            yield item, None


class Rspamd(ScannerPlugin):
    """Check messages with rspamd over HTTP."""

    name = "rspamd"
    daemon = "rspamd"

    rspamd_socket: ScannerAddress = address_argument(
        11333, "127.0.0.1:11333", "rspamd's normal worker: host:port or a Unix socket path")
    reject: str = reject_argument("1", "rspamd's reject action: 1 refuse, 0 only log, naughty: leave it to "
                                  "the naughty plugin")
    soft_reject: bool = arg.bool(True, "carry out rspamd's soft reject (451)")
    greylist: bool = arg.bool(True, "carry out rspamd's greylist action (451)")
    spam_header: str = arg.str("X-Spam", "the field added for rspamd's 'add header' action (value Yes)")
    subject_prefix: str = arg.str("*** SPAM ***", "for 'rewrite subject' when rspamd gives no subject")
    add_headers: str = arg.choice(("always", "spam", "never"), "always",
                                  "add X-Rspamd-Action and X-Rspamd-Score: always, for spam only, never")
    milter_headers: bool = arg.bool(True, "apply the header changes rspamd returns (milter block)")
    dkim: bool = arg.bool(True, "add the DKIM-Signature rspamd returns")
    on_error: str = on_error_argument("accept")
    max_size: int = size_argument(20 << 20, "skip larger messages (logged)")

    def register(self, *args: str) -> None:
        """One connection pool per engine, for the life of the engine."""
        self._reactor = scanner_reactor(self)
        self.pool = HTTPConnectionPool(self._reactor, persistent=False)
        endpoints = _Endpoints(self._reactor, self.rspamd_socket, self.connect_timeout)
        self.agent = Agent.usingEndpointFactory(self._reactor, endpoints, pool=self.pool)

    def close(self) -> Any:
        return self.pool.closeCachedConnections()

    async def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        header = transaction.header
        for name in (*_OUR_FIELDS, self.spam_header):
            header.remove(name)
        reason = self.skip_reason(transaction)
        if reason is not None:
            return self.skipped(transaction, reason)
        answer, outage = await self.scan_or_outage(transaction, lambda: self.check(transaction))
        if answer is None:
            return outage
        return self.act(transaction, answer)

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        return discard_answer(self, transaction)

    def request_headers(self, transaction: Transaction) -> dict[bytes | str, list[bytes | str]]:
        """The envelope, as rspamd's protocol takes it in HTTP headers."""
        connection = transaction.connection
        sender = transaction.sender
        fields: dict[str, list[str]] = {
            "From": [sender.address if sender is not None and not sender.is_null else "<>"],
            "Rcpt": [rcpt.address for rcpt in transaction.recipients],
            "IP": [connection.remote_ip],
            "Queue-Id": [f"{connection.id}.{transaction.id}"],
            "MTA-Name": [self.me],
        }
        if connection.hello_host:
            fields["Helo"] = [connection.hello_host]
        if connection.remote_host:
            fields["Hostname"] = [connection.remote_host]
        if connection.auth_user:
            fields["User"] = [connection.auth_user]
        if connection.tls is not None:
            fields["TLS-Cipher"] = [connection.tls.cipher]
            fields["TLS-Version"] = [connection.tls.version]
        return {name.encode(): [value.encode("utf-8", "replace") for value in values]
                for name, values in fields.items()}

    async def check(self, transaction: Transaction) -> dict[str, Any]:
        """POST the message to /checkv2 and read rspamd's JSON answer."""
        import treq
        from treq.client import HTTPClient

        client = HTTPClient(self.agent)
        url = "http://rspamd/checkv2" if self.rspamd_socket.path else f"http://{self.rspamd_socket}/checkv2"
        try:
            response = await client.post(url, data=MessageBodyProducer(self, transaction),
                                         headers=self.request_headers(transaction))
            body = await treq.content(response)
        except CancelledError:
            raise
        except Exception as err:
            if any(reason.check(CancelledError) for reason in getattr(err, "reasons", ())):
                raise CancelledError() from err  # our timeout, seen through the HTTP client
            raise ScannerError(f"{self.rspamd_socket}: {type(err).__name__}: {err}") from err
        if response.code != 200:
            raise ScannerError(f"rspamd answered HTTP {response.code}: {body[:200]!r}")
        try:
            answer = json.loads(body)
        except ValueError as err:
            raise ScannerError(f"rspamd's answer is not JSON: {body[:200]!r}") from err
        if not isinstance(answer, dict) or not isinstance(answer.get("action"), str):
            raise ScannerError(f"rspamd's answer has no action: {body[:200]!r}")
        try:
            answer["score"] = float(answer.get("score", 0))
            answer["required_score"] = float(answer.get("required_score", 0))
        except (TypeError, ValueError) as err:
            raise ScannerError(f"rspamd's answer has no usable score: {body[:200]!r}") from err
        return answer

    def act(self, transaction: Transaction, answer: dict[str, Any]) -> HookAnswer:
        """Headers, note and the verdict for one checked message."""
        header = transaction.header
        action = answer["action"]
        score, required = answer["score"], answer["required_score"]
        symbols = sorted(answer.get("symbols") or {})
        messages = answer.get("messages") or {}
        text = str(messages.get("smtp_message") or "") if isinstance(messages, dict) else ""
        note = self.note(transaction, action, score=score, required=required, symbols=symbols)
        self.log(LOGINFO, f"{action}, score {score:g}/{required:g} symbols={','.join(symbols) or '-'}")
        if self.milter_headers and isinstance(answer.get("milter"), dict):
            self.apply_milter(header, answer["milter"])
        signatures = answer.get("dkim-signature")
        if self.dkim and signatures:
            for signature in reversed(signatures if isinstance(signatures, list) else [signatures]):
                header.prepend("DKIM-Signature", str(signature))
        if self.add_headers == "always" or (self.add_headers == "spam" and action != "no action"):
            header.add("X-Rspamd-Action", action)
            header.add("X-Rspamd-Score", f"{score:.2f} / {required:.2f}")
        if action == "reject":
            self.adjust_karma(transaction, -1)
            refused = self.get_reject(transaction, text or "Spam message rejected", f"score {score:g}")
            return refused if not isinstance(refused, tuple) else self.refusal(*refused)
        if action == "soft reject" and self.soft_reject:
            return DENYSOFT, Reply(451, "4.7.1", text or "Try again later")
        if action == "greylist" and self.greylist:
            return DENYSOFT, Reply(451, "4.7.1", text or "Greylisted, try again later")
        if action == "rewrite subject":
            subject = answer.get("subject")
            if not isinstance(subject, str) or not subject:
                subject = f"{self.subject_prefix} {header.get('Subject', '') or ''}".rstrip()
            header.replace("Subject", subject)
        elif action == "add header":
            header.add(self.spam_header, "Yes")
        elif action == "quarantine":
            transaction.notes["quarantine"] = f"{self.plugin_name}: score {score:g}"
        elif action == "discard":
            transaction.notes["discard"] = f"{self.plugin_name}: score {score:g}"
        note["action"] = action
        return DECLINED

    @staticmethod
    def apply_milter(header: Headers, milter: dict[str, Any]) -> None:
        """rspamd's ``remove_headers`` then ``add_headers``, with its positions."""
        removals = milter.get("remove_headers")
        if isinstance(removals, dict):
            for name, which in removals.items():
                remove_fields(header, name, int(which) if isinstance(which, int | float) else 0)
        additions = milter.get("add_headers")
        if isinstance(additions, dict):
            for name, spec in additions.items():
                for value, order in header_values(spec):
                    if order is None:
                        header.add(name, value)
                    else:
                        header.insert(insert_position(header, order), name, value)
