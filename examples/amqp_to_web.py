"""Mail in, web post out: the seed talk's SMTP application, behind a queue.

"Writing Applications with Qpsmtpd" posted classified ads by mail: take a
photo with the phone, mail it with a subject and a description, and a plugin
logs in to the web site and posts the ad with the picture. Doing the web
work inside the SMTP transaction ties the sender's 250 to a slow web site;
here qptwisted's ``queue/amqp`` puts the mail into RabbitMQ and this
consumer does the web part at its own pace:

- take a message from the queue (``format=raw`` or ``format=json``),
- check it is for the application's address and from an authenticated
  sender (the ``x-auth-user`` header; the seed checked ``relay_client``),
- POST the ad to the web application as ``multipart/form-data``: ``title``
  (the subject), ``body`` (the text part), ``sender``, and every image
  attachment as a file,
- acknowledge the message when the site answered 2xx; drop it (with a log
  line) when the site refused it (4xx) or it is not for us; put it back
  after a pause when the site is down (5xx, no answer), so nothing is lost.

Run it next to the server::

    python examples/amqp_to_web.py --amqp amqp://guest:guest@127.0.0.1:5672/%2F \\
        --queue mail --post https://ads.example.org/post --recipient ads@example.org

``tests/test_amqp_to_web.py`` runs it against a private RabbitMQ and a small
web server, so the example keeps working.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

log = Logger(namespace="amqp_to_web")


@dataclass
class Ad:
    """What one mail becomes on the web site."""

    sender: str
    recipients: list[str]
    title: str
    body: str
    images: list[tuple[str, str, bytes]] = field(default_factory=list)  # (filename, type, content)
    auth_user: str = ""


def ad_from_delivery(properties: Any, body: bytes) -> Ad:
    """Read a queued message (either format of ``queue/amqp``) into an :class:`Ad`."""
    headers = dict(properties.headers or {})
    if properties.content_type == "application/json":
        document = json.loads(body)
        raw = base64.b64decode(document["raw"])
        sender, recipients = document["sender"], list(document["recipients"])
        auth_user = document.get("auth_user") or ""
    else:
        raw = body
        sender = str(headers.get("x-envelope-from", ""))
        recipients = [str(rcpt) for rcpt in headers.get("x-envelope-to", [])]
        auth_user = str(headers.get("x-auth-user", ""))
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    text = message.get_body(preferencelist=("plain",))
    images = []
    for part in message.iter_attachments():
        if part.get_content_maintype() == "image":
            content = part.get_payload(decode=True)
            if isinstance(content, bytes):
                images.append((part.get_filename() or "image", part.get_content_type(), content))
    return Ad(sender, recipients, str(message.get("Subject", "")),
              text.get_content() if text is not None else "", images, auth_user)


async def post_ad(ad: Ad, url: str, reactor: Any, timeout: float = 30) -> int:
    """POST the ad as a form with its images (a fresh connection each time); the HTTP status."""
    import treq
    from twisted.web.client import HTTPConnectionPool

    files = {f"image{number}": (name, ctype, io.BytesIO(content))
             for number, (name, ctype, content) in enumerate(ad.images, 1)}
    response = await treq.post(url, data={"title": ad.title, "body": ad.body, "sender": ad.sender},
                               files=files or None, timeout=timeout, reactor=reactor,
                               pool=HTTPConnectionPool(reactor, persistent=False))
    await response.content()
    return int(response.code)


async def handle(channel: Any, method: Any, properties: Any, body: bytes, url: str, recipient: str | None,
                 reactor: Any, retry_pause: float = 5) -> str:
    """Post one delivery and settle it with the broker; returns what happened (for logs and tests)."""
    ad = ad_from_delivery(properties, body)
    if recipient and recipient.lower() not in (rcpt.lower() for rcpt in ad.recipients):
        channel.basic_nack(method.delivery_tag, requeue=False)
        return "not for us"
    if not ad.auth_user:
        channel.basic_nack(method.delivery_tag, requeue=False)
        return "sender not authenticated"
    try:
        status = await post_ad(ad, url, reactor)
    except Exception as err:  # the site is down or slow: keep the message, try again later
        log.warn("posting failed: {err}; trying again in {pause} s", err=err, pause=retry_pause)
        await task.deferLater(reactor, retry_pause, lambda: None)
        channel.basic_nack(method.delivery_tag, requeue=True)
        return "retry"
    if 200 <= status < 300:
        channel.basic_ack(method.delivery_tag)
        return "posted"
    if status < 500:
        log.warn("the site refused the ad {title!r} ({status}); dropped", title=ad.title, status=status)
        channel.basic_nack(method.delivery_tag, requeue=False)
        return "refused"
    await task.deferLater(reactor, retry_pause, lambda: None)
    channel.basic_nack(method.delivery_tag, requeue=True)
    return "retry"


async def consume(reactor: Any, amqp_url: str, queue: str, post_url: str, recipient: str | None = None,
                  limit: int | None = None, prefetch: int = 10) -> list[str]:
    """Consume ``queue`` (``limit`` messages, or for ever); the outcome of each message."""
    import pika
    from pika.adapters.twisted_connection import TwistedProtocolConnection
    from twisted.internet.endpoints import HostnameEndpoint, connectProtocol

    parameters = pika.URLParameters(amqp_url)
    connection = TwistedProtocolConnection(parameters, custom_reactor=reactor)
    await connectProtocol(HostnameEndpoint(reactor, parameters.host.encode(), parameters.port), connection)
    await connection.ready
    channel = await connection.channel()
    await channel.basic_qos(prefetch_count=prefetch)
    deliveries, _tag = await channel.basic_consume(queue=queue, auto_ack=False)
    outcomes: list[str] = []
    try:
        while limit is None or len(outcomes) < limit:
            channel_, method, properties, body = await deliveries.get()
            outcome = await handle(channel, method, properties, body, post_url, recipient, reactor)
            log.info("{queue_id}: {outcome}", queue_id=properties.message_id, outcome=outcome)
            outcomes.append(outcome)
    finally:
        closed = connection.close()
        if closed is not None:
            await closed
    return outcomes


def main(argv: list[str] | None = None) -> None:
    """The command line: consume for ever."""
    parser = argparse.ArgumentParser(description="Post mail from a queue to a web application.")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--queue", default="mail")
    parser.add_argument("--post", required=True, help="the web application's form URL")
    parser.add_argument("--recipient", help="only mail to this address is for the application")
    options = parser.parse_args(argv)
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    task.react(lambda reactor: defer.Deferred.fromCoroutine(
        consume(reactor, options.amqp, options.queue, options.post, options.recipient)))


if __name__ == "__main__":
    main()
