"""Publishing to an AMQP 0-9-1 broker (RabbitMQ) with publisher confirms, on the reactor.

:class:`ConfirmedPublisher` keeps one connection and one confirm-mode
channel (pika's Twisted adapter) and answers each :meth:`~ConfirmedPublisher.publish`
only when the broker has *confirmed* the message (``Basic.Ack``): it is then
in a queue (``mandatory``: a message no queue takes is returned and counts
as a failure) and, published persistent to a durable queue, on the broker's
disk. Everything else fails the Deferred, so the caller can answer 4xx:

- no connection, and the last attempt failed less than the backoff ago:
  :class:`BrokerUnavailable` at once, without waiting (the backoff starts at
  one second and doubles up to ``max_backoff``; a background attempt keeps
  the connection coming back);
- the broker refuses (``Basic.Nack``), returns the message (no queue), or
  the channel or connection closes before the confirm;
- no confirm within ``confirm_timeout`` seconds (the broker may still take
  the message later: the sender's retry is then a duplicate).

``pika`` is imported when the first connection is made (the ``amqp`` extra).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.python.failure import Failure

Setup = Callable[[Any], Awaitable[Any]]
Log = Callable[[str], None]


class BrokerUnavailable(Exception):
    """The broker cannot be reached now (the message was not published)."""


def _endpoint(reactor: Any, url: str, timeout: float) -> IStreamClientEndpoint:
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
    from twisted.internet.ssl import optionsForClientTLS

    parts = urlsplit(url)
    secure = parts.scheme == "amqps"
    host = parts.hostname or "localhost"
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host.encode("idna"),
                                                       parts.port or (5671 if secure else 5672),
                                                       timeout=timeout)
    if secure:
        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


class ConfirmedPublisher:
    """One confirm-mode channel to the broker at ``url``; see the module docstring.

    ``setup(channel)`` runs on every new channel before it is used (declare
    the queue); ``log`` gets one line per connect, loss and failure.
    """

    def __init__(self, url: str, reactor: Any, clock: IReactorTime, setup: Setup | None = None,
                 log: Log | None = None, connect_timeout: float = 10.0, confirm_timeout: float = 30.0,
                 max_backoff: float = 30.0) -> None:
        self.url = url
        self.reactor = reactor
        self.clock = clock
        self.setup = setup
        self.log = log or (lambda line: None)
        self.connect_timeout = connect_timeout
        self.confirm_timeout = confirm_timeout
        self.max_backoff = max_backoff
        self.connection: Any = None
        self.channel: Any = None
        self._waiters: list[Deferred[Any]] | None = None  # a connection attempt is running
        self._delay = 1.0
        self._retry_at = 0.0
        self._last_error = ""
        self._retry_call: Any = None
        self._closing = False

    @property
    def connected(self) -> bool:
        """True while a confirm-mode channel is open."""
        return self.channel is not None and self.channel.is_open

    # -- publishing --------------------------------------------------------------------
    def publish(self, exchange: str, routing_key: str, body: bytes, properties: Any) -> Deferred[None]:
        """Publish persistent-as-given ``body``; fires once the broker confirmed it."""
        return self._ready().addCallback(self._publish, exchange, routing_key, body, properties)

    def _publish(self, channel: Any, exchange: str, routing_key: str, body: bytes,
                 properties: Any) -> Deferred[None]:
        confirmed = channel.basic_publish(exchange=exchange, routing_key=routing_key, body=body,
                                          properties=properties, mandatory=True)
        return bounded(confirmed, self.confirm_timeout, self.clock).addCallback(lambda _: None)

    # -- the connection ----------------------------------------------------------------
    def _ready(self) -> Deferred[Any]:
        if self._closing:
            return fail(BrokerUnavailable("the publisher is closed"))
        if self.connected:
            return succeed(self.channel)
        if self._waiters is not None:
            waiter: Deferred[Any] = Deferred()
            self._waiters.append(waiter)
            return waiter
        now = self.clock.seconds()
        if now < self._retry_at:
            return fail(BrokerUnavailable(f"broker unavailable ({self._last_error}); next attempt in "
                                          f"{self._retry_at - now:.0f} s"))
        waiter = Deferred()
        self._waiters = [waiter]
        Deferred.fromCoroutine(self._connect()).addBoth(self._connected)
        return waiter

    async def _connect(self) -> Any:
        import pika
        from pika.adapters.twisted_connection import TwistedProtocolConnection
        from twisted.internet.endpoints import connectProtocol

        parameters = pika.URLParameters(self.url)
        protocol = TwistedProtocolConnection(parameters, custom_reactor=self.reactor)
        endpoint = _endpoint(self.reactor, self.url, self.connect_timeout)
        opening = connectProtocol(endpoint, protocol)
        opening.addTimeout(self.connect_timeout, self.clock)
        await opening
        try:
            assert protocol.ready is not None
            await bounded(protocol.ready, self.connect_timeout, self.clock)
            channel = await protocol.channel()
            await channel.confirm_delivery()
            if self.setup is not None:
                await self.setup(channel)
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            raise
        self.connection = protocol
        if protocol.closed is not None:
            protocol.closed.addBoth(self._lost, "connection")
        channel.on_closed.addBoth(self._lost, "channel")
        return channel

    def _connected(self, result: Any) -> None:
        waiters, self._waiters = self._waiters or [], None
        if isinstance(result, Failure):
            self._last_error = _describe(result)
            self._retry_at = self.clock.seconds() + self._delay
            self.log(f"cannot reach the broker: {self._last_error}; next attempt in {self._delay:.0f} s")
            self._schedule_retry()
            self._delay = min(self._delay * 2, self.max_backoff)
            for waiter in waiters:
                waiter.errback(BrokerUnavailable(f"broker unavailable: {self._last_error}"))
            return
        self.channel = result
        self._delay = 1.0
        self._retry_at = 0.0
        self.log("connected to the broker")
        for waiter in waiters:
            waiter.callback(result)

    def _lost(self, reason: Any, what: str) -> Any:
        if self._closing or self.channel is None:
            return None
        self.channel = None
        connection, self.connection = self.connection, None
        text = reason.getErrorMessage() if isinstance(reason, Failure) else str(reason)
        self.log(f"lost the broker {what}: {text}")
        if connection is not None and connection.transport is not None and what == "channel":
            connection.transport.abortConnection()  # a closed channel: start over with a fresh connection
        self._retry_at = self.clock.seconds() + self._delay
        self._schedule_retry()
        return None

    def _schedule_retry(self) -> None:
        if self._closing or (self._retry_call is not None and self._retry_call.active()):
            return
        self._retry_call = self.clock.callLater(max(0.0, self._retry_at - self.clock.seconds()),
                                                self._background_retry)

    def _background_retry(self) -> None:
        self._retry_call = None
        if not self._closing and not self.connected and self._waiters is None:
            self._ready().addErrback(lambda failure: None)

    def close(self) -> Deferred[Any]:
        """Close the connection; fires when it is closed (or at once without one)."""
        self._closing = True
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        connection, self.connection, self.channel = self.connection, None, None
        if connection is None or connection.is_closed:
            return succeed(None)
        closed = connection.close()
        if closed is None:
            return succeed(None)
        return bounded(closed, 5, self.clock).addBoth(lambda _: None)


def bounded(source: Deferred[Any], seconds: float, clock: IReactorTime) -> Deferred[Any]:
    """A Deferred with ``source``'s result, or a TimeoutError after ``seconds``; ``source`` is not touched.

    pika fires its Deferreds itself (a confirm, the connection ready), even
    after we stopped waiting; cancelling them would make that a crash in pika.
    """
    answer: Deferred[Any] = Deferred()

    def relay(result: object) -> None:
        if not answer.called:
            if isinstance(result, Failure):
                answer.errback(result)
            else:
                answer.callback(result)
        elif isinstance(result, Failure):
            result.trap(Exception)  # came after our timeout: already answered

    source.addBoth(relay)
    answer.addTimeout(seconds, clock)
    return answer


def _describe(failure: Failure) -> str:
    text = failure.getErrorMessage() or failure.type.__name__  # type: ignore[union-attr]
    return f"{failure.type.__name__}: {text}" if text != failure.type.__name__ else text  # type: ignore[union-attr]
