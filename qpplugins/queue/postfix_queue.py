"""queue/postfix-queue: hand accepted mail straight to Postfix's ``cleanup`` service, as qpsmtpd does.

The message goes over ``cleanup``'s socket in Postfix's own record
protocol (see :mod:`qptwisted.lib.postfix`), the way Postfix's ``smtpd`` and
``pickup`` hand over mail: no ``sendmail`` process per message, no
``postdrop``. ``250 Queued! <message-id> (Queue-Id: ID)`` is sent only once
``cleanup`` has answered that the message is in Postfix's queue (Postfix
fsyncs the queue file first).

Arguments: ``[SOCKET] [FLAG_...] [timeout=S]``.

``SOCKET``
    ``cleanup``'s socket: a path (default
    ``/var/spool/postfix/public/cleanup``) or ``host:port``. The config file
    ``cleanup_sockets`` (one per line, tried in order until one connects)
    takes precedence, and the environment variable ``POSTFIXQUEUE`` over
    both, as in qpsmtpd.
``FLAG_...``
    ``cleanup``'s processing flags, combined: ``FLAG_FILTER``
    (``header_checks``, ``body_checks``, ``content_filter``), ``FLAG_MILTER``
    (``non_smtpd_milters``), ``FLAG_BCC_OK`` (``recipient_bcc_maps``, ...),
    ``FLAG_MAP_OK`` (``virtual_alias_maps``, ``canonical_maps``, ...),
    ``FLAG_HOLD`` (into the hold queue), ``FLAG_BOUNCE``, ``FLAG_DISCARD``,
    and the masks ``FLAG_FILTER_ALL`` and ``FLAG_MASK_EXTERNAL`` (what Postfix
    uses for mail from outside: probably what you want), ``FLAG_MASK_INTERNAL``,
    ``FLAG_MASK_EXTRA``, ``FLAG_NONE``. No flag is set by default. A word
    that is not a flag stops the start (qpsmtpd logged it and went on).
``timeout=S``
    give up on a ``cleanup`` that has not answered after S seconds (default
    600): ``452``.

Answers: queued is ``250``; a refusal by ``cleanup`` (``header_checks``
REJECT, too big, too many hops, no recipients) is ``552`` with Postfix's
reason; a temporary failure (``cleanup`` deferred, could not write the queue
file, a broken lookup table) is ``452``; no ``cleanup`` to talk to is ``452`` too.
Besides qpsmtpd's records it passes ``rewrite_context=remote`` (the mail came
from outside, so Postfix does not qualify addresses in its headers as local
mail) and the client's name, address and HELO for Postfix's log.

The user qptwisted runs as must be allowed to connect to the socket: on
Debian ``public/cleanup`` belongs to group ``postdrop``.

config/plugins::

    queue/postfix-queue /var/spool/postfix/public/cleanup FLAG_MASK_EXTERNAL
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint

from qptwisted import DENY, DENYSOFT, LOGERROR, LOGINFO, OK, Plugin, Transaction, arg
from qptwisted.lib.postfix import FLAGS, CleanupError, CleanupUnreachable, Envelope, submit

DEFAULT_SOCKET = "/var/spool/postfix/public/cleanup"
#: the longest path a Unix socket address holds (sun_path, less its terminating NUL)
MAX_SOCKET_PATH = 107


class PostfixQueue(Plugin):
    """Queue into Postfix through its cleanup socket."""

    name = "queue/postfix-queue"
    #: the reactor used to connect (tests may replace it); timers use the engine clock
    reactor: Any = None

    socket: str | None = arg.str(None, "cleanup's socket: a path or host:port (default "
                                 f"{DEFAULT_SOCKET}); qpsmtpd's first word")
    flag: list[str] = arg.choice(tuple(FLAGS), help="a cleanup flag (FLAG_MASK_EXTERNAL, FLAG_FILTER ...); "
                                 "repeatable", positional=True, repeat=True)
    cleanup_timeout: float = arg.duration(600, "give up on a cleanup that has not answered after this long",
                                          aliases=("timeout",))

    def configure(self, words: Sequence[str] | None = None) -> None:
        """qpsmtpd's line: the first word is the socket if it is a path or ``host:port``, the rest flags."""
        words = list(self.args if words is None else words)
        if words and _is_socket(words[0]):
            words[0] = f"socket={words[0]}"
        super().configure(words)

    def register(self, *args: str) -> None:
        """Combine the flags."""
        self.flags = 0
        for name in self.flag:
            self.flags |= FLAGS[name.upper()]

    def sockets(self) -> list[str]:
        """Where to find cleanup: ``$POSTFIXQUEUE``, else ``cleanup_sockets``, else the argument."""
        from_env = os.environ.get("POSTFIXQUEUE")
        if from_env:
            return [from_env]
        return self.config_list("cleanup_sockets") or [self.socket or DEFAULT_SOCKET]

    def endpoint(self, socket: str) -> IStreamClientEndpoint:
        """The endpoint of a socket path or ``host:port``."""
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        if socket.startswith("/"):
            if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
                # the kernel refuses it, and Twisted's connect would fail without calling back
                raise CleanupUnreachable(f"socket path longer than {MAX_SOCKET_PATH} bytes")
            return UNIXClientEndpoint(reactor, socket)
        host, _, port = socket.rpartition(":")
        return HostnameEndpoint(reactor, host.strip("[]"), int(port))

    def envelope(self, transaction: Transaction) -> Envelope:
        """Sender, recipients, and what Postfix may log about the client."""
        assert transaction.sender is not None
        connection = transaction.connection
        attributes = [("rewrite_context", "remote"), ("log_client_address", connection.remote_ip),
                      ("log_client_name", connection.remote_host or "unknown"),
                      ("log_helo_name", connection.hello_host or ""),
                      ("log_protocol_name", connection.protocol)]
        return Envelope(transaction.sender.address, [rcpt.address for rcpt in transaction.recipients],
                        [(name, value) for name, value in attributes if value])

    def hook_queue(self, transaction: Transaction) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.deliver(transaction))

    async def deliver(self, transaction: Transaction) -> tuple[Any, str]:
        """Try each socket until one connects; answer from cleanup's status."""
        envelope = self.envelope(transaction)
        for socket in self.sockets():
            try:
                result = await submit(self.endpoint(socket), self.clock, self.flags, envelope,
                                      transaction.iter_message(), self.cleanup_timeout)
            except CleanupUnreachable as err:
                self.log(LOGERROR, f"cannot connect to cleanup at {socket}: {err}")
                continue
            except (CleanupError, ValueError) as err:
                self.log(LOGERROR, f"cleanup at {socket}: {err}")
                return DENYSOFT, "Queue error, try again later (#4.3.0)"
            if result.queued:
                self.log(LOGINFO, f"queued as {result.queue_id}")
                transaction.notes["queue_id"] = result.queue_id
                said = " ".join(filter(None, ("Queued!", transaction.message_id,
                                              f"(Queue-Id: {result.queue_id})")))
                return OK, said
            code = DENYSOFT if result.temporary else DENY
            reason = _with_class(result.explanation(), "4" if code == DENYSOFT else "5")
            self.log(LOGERROR, f"cleanup refused {result.queue_id}: status {result.status}: {reason}")
            return code, reason
        return DENYSOFT, "Queue unavailable, try again later (#4.3.0)"


def _is_socket(word: str) -> bool:
    host, colon, port = word.rpartition(":")
    return word.startswith("/") or bool(colon and host and port.isdigit())


def _with_class(reason: str, klass: str) -> str:
    """Postfix's reason with the class of its enhanced code matching our reply (``4.x.x`` for a 4xx)."""
    head, _, rest = reason.partition(" ")
    parts = head.split(".")
    if len(parts) == 3 and all(part.isdigit() for part in parts) and parts[0] in "245":
        return f"{klass}.{parts[1]}.{parts[2]} {rest}".rstrip()
    return reason
