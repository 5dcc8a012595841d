"""rcpt_verify: ask the mail server behind us whether a recipient exists, and refuse unknown ones at RCPT.

qpsmtpd's ``qmail_deliverable``, for any downstream that speaks SMTP or LMTP
(Postfix, Dovecot LMTP, Exim, another qptwisted). For each recipient the
plugin opens (or reuses) a connection to the downstream, says ``MAIL
FROM:<>`` and ``RCPT TO:<recipient>``, and ``RSET`` before the next probe:
no message is ever sent. The answer:

- ``250``/``251``: the user exists; the plugin declines, so ``rcpt_ok``
  and the other recipient plugins still decide (``accept 1`` accepts at
  once instead).
- ``5xx``: no such user: ``550 5.1.1`` now, instead of a bounce later.
- ``4xx``, no connection, a timeout: ``450`` (try again later), or, with
  ``unavailable accept``, declined as if the plugin were not there.

Answers are cached: existing users for ``positive_ttl``, unknown ones for
``negative_ttl``, at most ``cache_size`` addresses (the oldest go first);
temporary failures are never cached. Several clients asking about the same
address at once share one probe.

Relay clients and authenticated users send mail out, so their recipients
are not checked; with ``domains`` only recipients in those domains are.

Arguments:

``TARGET``
    the downstream: ``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or
    ``/path/to/socket`` (port 25, or 24 with ``lmtp``).
``lmtp``
    speak LMTP (``LHLO``), e.g. to Dovecot.
``domains D,D``
    check only recipients in these domains (default: every recipient).
``sender ADDRESS``
    the ``MAIL FROM`` of the probe (default: the null sender ``<>``).
``positive_ttl N``, ``negative_ttl N``
    how long answers are cached (default 1h and 10m; 0: not at all).
``cache_size N``
    how many addresses the cache holds (default 10000).
``accept 0|1``
    accept an existing recipient at once (default 0: decline).
``unavailable defer|accept``
    what a downstream that cannot answer means (default ``defer``: 450).
``timeout N``
    seconds to connect and for each reply (default 10).
``reuse N``, ``idle N``
    idle connections kept for the next probes (default 2) and for how long
    (default 10 s).
``helo NAME``
    the name in EHLO/LHLO (default: config ``me``).

config/plugins::

    rcpt_verify 127.0.0.1:24 lmtp domains example.org,example.net negative_ttl 5m
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from qptwisted import (
    DECLINED,
    DENY,
    DENYSOFT,
    LOGINFO,
    LOGWARN,
    OK,
    Address,
    HookAnswer,
    Plugin,
    Transaction,
    arg,
)
from qptwisted.lib.smtpclient import (
    ClientPool,
    Reply,
    SMTPClient,
    Timeouts,
    connect_client,
    parse_target,
    target_endpoint,
)

UNKNOWN = "Sorry, no mailbox here by that name (#5.1.1)"
UNAVAILABLE = "Cannot verify the recipient now, try again later (#4.4.1)"


class RecipientVerify(Plugin):
    """Recipient verification by an RCPT probe to the downstream, with a cache."""

    name = "rcpt_verify"
    timeout = 120.0
    #: the reactor used to connect (tests may replace it); timers use the engine clock
    reactor: Any = None

    target: str = arg.str(help="the downstream: HOST, HOST:PORT, [IPv6]:PORT or /path/to/socket",
                          positional=True)
    lmtp: bool = arg.flag("speak LMTP (LHLO)")
    domains: list[str] = arg.list([], "check only recipients in these domains (default: all)")
    sender: str = arg.str("", "the MAIL FROM of the probe (default: <>)")
    positive_ttl: float = arg.duration(3600, "how long an existing recipient is cached")
    negative_ttl: float = arg.duration(600, "how long an unknown recipient is cached")
    cache_size: int = arg.int(10000, "how many addresses the cache holds")
    accept: bool = arg.bool(False, "accept an existing recipient at once (default: decline)")
    unavailable: str = arg.choice(("defer", "accept"), "defer", "a downstream that cannot answer: 450 "
                                  "(defer) or decline (accept)")
    probe_timeout: float = arg.duration(10, "seconds to connect and for each reply", aliases=("wait",))
    reuse: int = arg.int(2, "idle connections kept for the next probes")
    idle: float = arg.duration(10, "how long an idle connection is kept")
    helo: str | None = arg.str(None, "the name in EHLO/LHLO (default: config me)")

    def register(self, *args: str) -> None:
        """Work out the downstream, set up the pool and the cache."""
        self.host, self.port = parse_target(self.target, 24 if self.lmtp else 25)
        self.wanted = {domain.lower().rstrip(".") for domain in self.domains}
        self.timeouts = Timeouts(connect=self.probe_timeout, command=self.probe_timeout,
                                 data=self.probe_timeout)
        self.pool = ClientPool(self.clock, self.reuse, self.idle)
        #: address -> (exists, expires)
        self.cache: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self.probing: dict[str, list[Deferred[bool | None]]] = {}

    def close(self) -> Deferred[Any]:
        """Close the idle connections."""
        from twisted.internet.defer import DeferredList

        return DeferredList(self.pool.close())

    # -- the hook ------------------------------------------------------------------
    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        connection = transaction.connection
        if connection.relay_client or connection.auth_user or not rcpt.host:
            return DECLINED
        if self.wanted and rcpt.host.lower().rstrip(".") not in self.wanted:
            return DECLINED
        address = rcpt.address.lower()
        known = self.cached(address)
        if known is not None:
            return self.answer(address, known, "cached")
        return self.exists(address).addCallback(lambda found: self.answer(address, found, "asked"))

    def answer(self, address: str, exists: bool | None, how: str) -> HookAnswer:
        """The hook's answer for what the downstream said (None: it could not say)."""
        if exists is None:
            if self.unavailable == "accept":
                return DECLINED
            return DENYSOFT, UNAVAILABLE
        self.log(LOGINFO, f"{'pass' if exists else 'fail'}, <{address}> {'exists' if exists else 'unknown'} "
                          f"({how})")
        if not exists:
            return DENY, UNKNOWN
        return OK if self.accept else DECLINED

    # -- the cache -----------------------------------------------------------------
    def cached(self, address: str) -> bool | None:
        """The cached answer for ``address``, if it has not expired."""
        entry = self.cache.get(address)
        if entry is None:
            return None
        if entry[1] <= self.clock.seconds():
            del self.cache[address]
            return None
        self.cache.move_to_end(address)
        return entry[0]

    def remember(self, address: str, exists: bool) -> None:
        """Cache an answer for its TTL, dropping the oldest entries beyond ``cache_size``."""
        ttl = self.positive_ttl if exists else self.negative_ttl
        if ttl <= 0 or self.cache_size <= 0:
            return
        self.cache[address] = (exists, self.clock.seconds() + ttl)
        self.cache.move_to_end(address)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    # -- probing -------------------------------------------------------------------
    def exists(self, address: str) -> Deferred[bool | None]:
        """Ask the downstream (one probe per address at a time); None if it could not say."""
        waiter: Deferred[bool | None] = Deferred()
        if address in self.probing:
            self.probing[address].append(waiter)
            return waiter
        self.probing[address] = [waiter]
        Deferred.fromCoroutine(self.probe(address)).addBoth(self._settled, address)
        return waiter

    def _settled(self, result: Any, address: str) -> None:
        for waiter in self.probing.pop(address, []):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def probe(self, address: str) -> bool | None:
        """MAIL FROM, RCPT TO, RSET on a pooled or new connection."""
        client: SMTPClient | None = None
        try:
            client = await self.pool.take()
            if client is None:
                reactor = self.reactor
                if reactor is None:
                    from twisted.internet import reactor
                endpoint = target_endpoint(reactor, self.host, self.port, self.timeouts.connect)
                client = await connect_client(endpoint, self.clock, self.helo or self.me, self.lmtp,
                                              self.timeouts)
            mail = await client.command(f"MAIL FROM:<{self.sender}>")
            rcpt: Reply | None = None
            if mail.code == 250:
                rcpt = await client.command(f"RCPT TO:<{address}>")
        except Exception as err:
            if client is not None:
                client.abort()
            self.log(LOGWARN, f"cannot ask {self.describe()} about <{address}>: {type(err).__name__}: {err}")
            return None
        self.pool.give_back(client)  # the pool resets it (RSET) before the next probe, or closes it
        if rcpt is None:
            self.log(LOGWARN, f"{self.describe()} refused the probe's MAIL FROM:<{self.sender}>: {mail}")
            return None
        if rcpt.code in (250, 251):
            self.remember(address, True)
            return True
        if rcpt.code >= 500:
            self.remember(address, False)
            return False
        self.log(LOGWARN, f"{self.describe()} deferred <{address}>: {rcpt}")
        return None

    def describe(self) -> str:
        """The downstream, for log lines."""
        return self.host if self.port is None else f"{self.host}:{self.port}"
