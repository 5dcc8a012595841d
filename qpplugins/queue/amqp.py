"""queue/amqp: hand accepted mail to RabbitMQ (AMQP 0-9-1) with publisher confirms.

Arguments: ``[URL] [exchange=NAME] [routing_key=KEY] [queue=NAME] [declare=yes|no]
[format=raw|json] [confirm_timeout=S] [connect_timeout=S] [max_backoff=S]``.
``URL`` defaults to ``amqp://guest:guest@127.0.0.1:5672/%2F`` (``amqps://``
for TLS; the virtual host is the path).

Each message is published once, **persistent** (delivery mode 2) and
``mandatory``, on a channel in confirm mode; the client gets ``250 Queued as
<queue id>`` only after the broker confirmed it. A broker that is down,
refuses (nack), cannot route the message to a queue, closes the channel, or
does not confirm within ``confirm_timeout`` (default 30 s) gives ``451
4.3.0`` and the message is not queued by us (the client retries). Only a
confirm that comes after the timeout (a broker that is very slow) can make
that retry a second copy. After a connection failure new attempts back off
from 1 s doubling up to ``max_backoff`` (default 30 s); meanwhile messages
get 451 at once, and the connection is retried in the background.

With ``declare=yes`` (the default) the durable queue ``queue`` (default:
the routing key, ``mail``) is declared, and bound to ``exchange`` when one
is named. Declare it yourself (quorum queues, policies) and say
``declare=no`` to keep the broker's settings.

The message: ``format=raw`` (default) publishes the stored message
(``content_type message/rfc822``), the envelope in the AMQP headers
``x-envelope-from``, ``x-envelope-to`` (a list), ``x-client-ip``,
``x-client-name``, ``x-helo``, ``x-auth-user``, ``x-queue-id``; the
``message_id`` property is the queue id. ``format=json`` publishes
``application/json``: ``{"queue_id", "sender", "recipients", "client_ip",
"client_name", "helo", "auth_user", "received", "raw"}`` with the message
base64 in ``raw`` (the headers are set as well). A consumer that turns the
queue into a web application: ``examples/amqp_to_web.py``.

The whole message is read into memory to publish it (AMQP bodies are one
piece): keep ``databytes`` to what the broker should carry.

config/plugins::

    queue/amqp amqp://mail:secret@127.0.0.1:5672/%2F queue=inbound confirm_timeout=20
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any, ClassVar

from twisted.internet.defer import Deferred

from qptwisted import DONE, LOGERROR, LOGINFO, OK, Plugin, Transaction, arg
from qptwisted.lib.amqp import ConfirmedPublisher


class AMQPQueue(Plugin):
    """Publish each accepted message to RabbitMQ; see the module docstring."""

    name = "queue/amqp"
    #: the hook may take as long as our own timeouts allow
    timeout: ClassVar[float | None] = 600.0
    #: the reactor used to connect (pika runs on it); our timers use the engine clock
    reactor: Any = None

    url: str = arg.str("amqp://guest:guest@127.0.0.1:5672/%2F", "the broker", positional=True)
    exchange: str = arg.str("", "the exchange to publish to (default: the default exchange)")
    routing_key: str = arg.str("mail", "the routing key (the queue name with the default exchange)")
    queue: str | None = arg.str(None, "the queue to declare and bind (default: the routing key)")
    declare: bool = arg.bool(True, "declare the durable queue (and bind it to the exchange)")
    format: str = arg.choice(("raw", "json"), "raw", "the body: the message (raw) or a JSON envelope")
    confirm_timeout: float = arg.duration(30, "seconds to wait for the broker's confirm")
    connect_timeout: float = arg.duration(10, "seconds to connect and open the channel")
    max_backoff: float = arg.duration(30, "longest pause between connection attempts")

    def register(self, *args: str) -> None:
        """Set up the publisher (it connects when the first message comes)."""
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        self.queue_name = self.queue or self.routing_key
        self.publisher = ConfirmedPublisher(
            self.url, self.reactor, self.clock, setup=self._declare if self.declare else None,
            log=lambda line: self.log(LOGINFO, line), connect_timeout=self.connect_timeout,
            confirm_timeout=self.confirm_timeout, max_backoff=self.max_backoff)

    def close(self) -> Deferred[Any]:
        """Close the broker connection."""
        return self.publisher.close()

    async def _declare(self, channel: Any) -> None:
        await channel.queue_declare(queue=self.queue_name, durable=True)
        if self.exchange:
            await channel.queue_bind(queue=self.queue_name, exchange=self.exchange,
                                     routing_key=self.routing_key)

    def hook_queue(self, transaction: Transaction) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.deliver(transaction))

    async def deliver(self, transaction: Transaction) -> Any:
        """Publish and wait for the confirm; 250 after it, 451 for anything else."""
        import pika

        queue_id = uuid.uuid4().hex[:20]
        connection = transaction.connection
        sender = transaction.sender.address if transaction.sender is not None else ""
        recipients = [rcpt.address for rcpt in transaction.recipients]
        headers = {"x-envelope-from": sender, "x-envelope-to": recipients,
                   "x-client-ip": connection.remote_ip, "x-client-name": connection.remote_host or "",
                   "x-helo": connection.hello_host or "", "x-auth-user": connection.auth_user or "",
                   "x-queue-id": queue_id}
        message = await self.defer_to_thread(transaction.message_bytes)
        if self.format == "json":
            body = json.dumps({"queue_id": queue_id, "sender": sender, "recipients": recipients,
                               "client_ip": connection.remote_ip, "client_name": connection.remote_host,
                               "helo": connection.hello_host, "auth_user": connection.auth_user,
                               "received": int(time.time()),
                               "raw": base64.b64encode(message).decode("ascii")}).encode()
            content_type = "application/json"
        else:
            body, content_type = message, "message/rfc822"
        properties = pika.BasicProperties(delivery_mode=2, content_type=content_type, message_id=queue_id,
                                          timestamp=int(time.time()), app_id="qptwisted", headers=headers)
        try:
            await self.publisher.publish(self.exchange, self.routing_key, body, properties)
        except Exception as err:
            why = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            self.log(LOGERROR, f"message from {sender or '<>'} not queued: {why}")
            connection.respond(451, "Message broker unavailable, try again later", "4.3.0")
            return DONE
        transaction.notes["queue_id"] = queue_id
        self.log(LOGINFO, f"published {queue_id} ({len(body)} bytes) to {self.exchange or '(default)'}/"
                 f"{self.routing_key}")
        return OK, f"Queued as {queue_id}"
