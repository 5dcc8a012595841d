"""queue/webhook: POST each accepted message to an HTTP endpoint (SMTP applications).

Arguments: ``URL [secret=KEY] [timeout=S]``. The secret may also come from
the config file ``webhook_secret``; ``timeout`` defaults to 30 s (engine
clock).

The body is JSON (``Content-Type: application/json``)::

    {"sender": "a@example.org", "recipients": ["b@example.net"],
     "client_ip": "192.0.2.1", "helo": "...", "message_id": "<...>",
     "headers": [["Subject", "..."], ...], "subject": "...",
     "text": "plain part or null", "html": "HTML part or null",
     "attachments": [{"filename": "...", "content_type": "...", "content": "<base64>"}],
     "raw": "<the whole stored message, base64>"}

With a secret, ``X-Qptwisted-Signature: sha256=<hex HMAC-SHA256 of the body>``
lets the endpoint check the sender. A 2xx answer is ``250 Queued!``; a 4xx
is a 552 (the application refused the message); a 5xx, a timeout, or a
connection failure is a 451-class temporary failure (452), so the client
retries. Requests use ``treq``.

config/plugins::

    queue/webhook https://app.example.org/inbound secret=s3cret
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from email import policy
from email.parser import BytesParser
from typing import Any

from twisted.internet.defer import CancelledError, Deferred

from qptwisted import DENY, DENYSOFT, LOGERROR, LOGINFO, OK, Plugin, Transaction, arg


def message_document(transaction: Transaction) -> dict[str, Any]:
    """The JSON document describing ``transaction``'s message."""
    raw = transaction.message_bytes()
    message = BytesParser(policy=policy.default).parsebytes(raw)
    text = html = None
    attachments = []
    for part in message.walk():
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        ctype = part.get_content_type()
        if disposition != "attachment" and ctype == "text/plain" and text is None:
            text = part.get_content()
        elif disposition != "attachment" and ctype == "text/html" and html is None:
            html = part.get_content()
        else:
            payload: Any = part.get_payload(decode=True) or b""
            attachments.append({"filename": part.get_filename(), "content_type": ctype,
                                "content": base64.b64encode(payload).decode()})
    assert transaction.sender is not None
    return {
        "sender": transaction.sender.address,
        "recipients": [rcpt.address for rcpt in transaction.recipients],
        "client_ip": transaction.connection.remote_ip,
        "helo": transaction.connection.hello_host,
        "message_id": transaction.message_id,
        "headers": [[name, str(value)] for name, value in message.items()],
        "subject": str(message["Subject"]) if message["Subject"] is not None else None,
        "text": text, "html": html, "attachments": attachments,
        "raw": base64.b64encode(raw).decode(),
    }


def signature(secret: bytes, body: bytes) -> str:
    """``sha256=<hex>`` HMAC of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Webhook(Plugin):
    """POST the message as JSON; the HTTP status decides the SMTP reply."""

    name = "queue/webhook"
    timeout = 600.0
    #: the reactor treq uses (tests may replace it); the timeout runs on the engine clock
    reactor: Any = None

    url: str = arg.str(help="where each message is POSTed", positional=True)
    secret: str | None = arg.str(None, "the HMAC key of the signature header (default: config "
                                 "webhook_secret)")
    request_timeout: float = arg.duration(30, "how long a POST may take", aliases=("timeout",))

    def register(self, *args: str) -> None:
        """Take the secret from the config file when the line has none."""
        secret = self.secret or self.config("webhook_secret")
        self.key = secret.encode() if secret else None

    def hook_queue(self, transaction: Transaction) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.deliver(transaction))

    async def deliver(self, transaction: Transaction) -> tuple[Any, str]:
        """POST and map the status."""
        import treq
        from twisted.web.client import HTTPConnectionPool

        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        body = json.dumps(message_document(transaction)).encode()
        headers: dict[bytes | str, list[bytes | str]] = {b"Content-Type": [b"application/json"]}
        if self.key:
            headers[b"X-Qptwisted-Signature"] = [signature(self.key, body).encode()]
        pool = HTTPConnectionPool(reactor, persistent=False)
        request = treq.post(self.url, data=body, headers=headers, pool=pool, reactor=reactor)
        request.addTimeout(self.request_timeout, self.clock)
        try:
            response = await request
            answer = await treq.content(response)
        except CancelledError:
            raise
        except Exception as err:
            self.log(LOGERROR, f"POST {self.url} failed: {type(err).__name__}: {err}")
            return DENYSOFT, "Application unavailable, try again later (#4.4.1)"
        status = response.code
        detail = answer[:200].decode("utf-8", "replace").strip()
        if 200 <= status < 300:
            self.log(LOGINFO, f"POST {self.url}: {status}")
            return OK, f"Queued! {transaction.message_id or ''}".rstrip()
        self.log(LOGERROR, f"POST {self.url}: HTTP {status} {detail}")
        if 400 <= status < 500:
            return DENY, f"Message refused by the application (HTTP {status})"
        return DENYSOFT, f"Application error (HTTP {status}), try again later (#4.3.0)"
