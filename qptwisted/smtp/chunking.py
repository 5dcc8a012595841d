"""BDAT (RFC 3030 CHUNKING, with BINARYMIME): the command and the state of a chunk sequence.

``BDAT <octets> [LAST]`` is followed at once by exactly that many octets.
The first BDAT of a transaction runs the ``data`` hook (as DATA does) and
makes one :class:`~qptwisted.smtp.receiver.MessageReceiver` that every
chunk of the sequence feeds; each chunk but the last is answered
``250 2.0.0 <n> octets received``, the last goes through the same checks,
``data_post`` and ``queue`` as a message sent with DATA. So every plugin
works unchanged.

Errors follow RFC 3030 §2: the chunk of a refused BDAT is still read (and
dropped, never held in memory), the transaction ends, and the chunks the
client had already pipelined are read and dropped too, each BDAT answered
with the same code as the first refusal, until ``BDAT ... LAST``, RSET or
MAIL. A chunk that would take the message past ``databytes`` is refused
with ``552 5.3.4`` without being kept. A BDAT whose size cannot be read
leaves no way to find the next command: it gets ``501`` and the connection
is closed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from qptwisted.core.codes import DONE, HookResult
from qptwisted.core.hooks import HOOKS
from qptwisted.core.replies import Reply
from qptwisted.smtp.receiver import ChunkDiscarder, MessageReceiver

if TYPE_CHECKING:
    from qptwisted.core.hooks import HookSpec
    from qptwisted.core.settings import Settings
    from qptwisted.mail.transaction import Transaction

Step = Deferred[Any] | None


class Session(Protocol):
    """What BDAT needs of the SMTP session (which imports this module, so it is described here)."""

    closed: bool
    settings: Settings
    transaction: Transaction
    receiver: MessageReceiver | None
    transport: Any

    def respond(self, code: int, message: str, enhanced: str | None = "") -> None:
        """Send a reply."""

    def disconnect(self) -> None:
        """Close after the replies."""

    def reset_transaction(self) -> None:
        """End the transaction and start a new one."""

    def databytes(self, group: str | None = "") -> int:
        """The size limit of the transaction's policy group."""

    def headers_end_hook(self) -> Callable[[MessageReceiver], Step] | None:
        """The ``data_headers_end`` runner, when a plugin listens."""

    def message_received(self, receiver: Any) -> Step:
        """The whole message arrived."""

    def log_refusal(self, receiver: MessageReceiver) -> None:
        """Log what the client is not told."""

    def _run(self, hook: str, then: Callable[[HookResult], Step], *args: Any, **kwargs: Any) -> Step:
        """Run a hook chain, then ``then``."""

    def _refusal(self, hook: HookSpec, result: HookResult, **fields: str) -> Reply | None:
        """The reply a refusing answer gets."""
_ARGUMENTS = re.compile(r"([0-9]{1,18})(?:[ \t]+(LAST))?\Z", re.IGNORECASE)
_DATA = HOOKS["data"]
TOO_BIG = Reply(552, "5.3.4", "Message too big!")


class Chunking:
    """The BDAT state of one session: the error that makes later chunks be dropped."""

    __slots__ = ("session", "error", "octets")

    def __init__(self, session: Session) -> None:
        self.session = session
        #: the refusal of this BDAT sequence; later chunks are dropped and get its code
        self.error: Reply | None = None
        #: the size of the chunk being read
        self.octets = 0

    def command(self, rest: str) -> Step:
        """``BDAT <octets> [LAST]``."""
        session = self.session
        match = _ARGUMENTS.match(rest.strip())
        if match is None:
            session.respond(501, "Syntax: BDAT octets [LAST]; closing connection", "5.5.4")
            session.disconnect()
            return None
        octets, last = int(match.group(1)), match.group(2) is not None
        if self.error is not None:
            text = f"{self.error.text} (chunk of {octets} octets discarded)"
            return self.discard(octets, last, self.error._replace(text=text))
        receiver = session.receiver
        if receiver is not None:
            return self.chunk(receiver, octets, last)
        transaction = session.transaction
        if transaction.sender is None:
            return self.fail(Reply(503, "5.5.1", "MAIL first"), octets, last)
        if not transaction.recipients:
            return self.fail(Reply(503, "5.5.1", "RCPT first"), octets, last)
        return session._run("data", lambda result: self._after_data(result, octets, last))

    def _after_data(self, result: HookResult, octets: int, last: bool) -> Step:
        session = self.session
        if result.code is DONE:  # the plugin answered the BDAT itself
            session.reset_transaction()
            return self.fail(None, octets, last)
        refusal = session._refusal(_DATA, result)
        if refusal is not None:
            if result.code in _DATA.closing:
                session.respond(refusal.code, refusal.text, refusal.enhanced)
                session.disconnect()
                return None
            session.reset_transaction()
            return self.fail(refusal, octets, last)
        receiver = MessageReceiver(session.transaction, session.settings, session.headers_end_hook(),
                                   chunked=True, databytes=session.databytes())
        session.receiver = receiver
        return self.chunk(receiver, octets, last)

    def chunk(self, receiver: MessageReceiver, octets: int, last: bool) -> Step:
        """Read the next chunk into ``receiver``, unless it would make the message too big."""
        session = self.session
        room = receiver.room
        if room is not None and octets > room:
            session.reset_transaction()
            return self.fail(TOO_BIG, octets, last)
        receiver.expect(octets, last)
        self.octets = octets
        if octets == 0:
            receiver.feed(b"")
            return session.message_received(receiver)
        session.transport.start_data(receiver)
        return None

    def received(self, receiver: MessageReceiver) -> Step:
        """A chunk but the last arrived: 250, or the refusal a broken message gets at once."""
        if receiver.waiting is not None:  # data_headers_end is still running
            return receiver.waiting.addCallback(lambda _: self._answer_chunk(receiver))
        return self._answer_chunk(receiver)

    def _answer_chunk(self, receiver: MessageReceiver) -> Step:
        session = self.session
        if session.closed:
            return None
        refusal = receiver.verdict()
        if refusal is not None:  # header too large, spool full, a broken plugin: no point in more chunks
            session.log_refusal(receiver)
            session.respond(refusal.code, refusal.text, refusal.enhanced)
            session.reset_transaction()
            self.error = refusal
            return None
        session.respond(250, f"{self.octets} octets received", "2.0.0")
        session.transport.message_accepted()  # a chunk is progress: the command count starts again
        return None

    def fail(self, reply: Reply | None, octets: int, last: bool) -> Step:
        """Refuse this BDAT: read its chunk, drop it, answer ``reply``; drop the chunks that follow."""
        self.error = None if last else reply or Reply(503, "5.5.1", "BDAT sequence failed")
        return self.discard(octets, last, reply)

    def discard(self, octets: int, last: bool, reply: Reply | None) -> Step:
        """Read ``octets`` octets and drop them, then answer ``reply``."""
        discarder = ChunkDiscarder(octets, last, reply)
        if discarder.complete:
            return self.discarded(discarder)
        self.session.transport.start_data(discarder)
        return None

    def discarded(self, discarder: ChunkDiscarder) -> Step:
        """A dropped chunk was read: answer its BDAT; after LAST the sequence is over."""
        if discarder.last:
            self.error = None
        reply = discarder.reply
        if reply is not None:
            self.session.respond(reply.code, reply.text, reply.enhanced)
        return None

