"""spamassassin: score each message with SpamAssassin's spamd; add X-Spam headers, refuse or mark spam.

At ``data_post`` (the message is complete, with our Received header) the
message is streamed from the spool to spamd over the SPAMC/1.5 protocol
(TCP or a Unix socket), in 64 KiB chunks with flow control: a large message
is never read into memory. spamd's verdict becomes headers and a decision:

* ``X-Spam-Flag: YES`` (spam only), ``X-Spam-Status: Yes|No, score=S
  required=R tests=...``, ``X-Spam-Level: ***`` and, with ``command report``,
  ``X-Spam-Report``. With ``command headers`` (the default) they are
  spamd's own fields (as its ``add_header`` settings make them); with
  ``symbols`` or ``report`` they are written here from the score and rules.
* ``reject SCORE``: a score at or above it is refused (``550 5.7.1``, or
  ``451 4.7.1`` with ``reject_type temp``).
* ``munge_subject_threshold SCORE`` prefixes the Subject with ``subject_prefix``.
* ``quarantine SCORE`` asks ``queue/quarantine`` to file the message.

Incoming ``X-Spam-*`` fields (a sender may forge ``X-Spam-Flag: NO``, or
``YES``) are handled first, whether or not the message is then scanned:
``leave_old_headers rename`` (default) renames them ``X-Old-Spam-*``,
``drop`` removes them, ``keep`` keeps them below ours, except
``X-Spam-Flag``, which is always renamed so that a forged flag never passes
for ours.

spamd's ``User:`` is ``spamd_user``, or the recipient when there is exactly
one (per-user preferences). The result is in ``transaction.notes["spamassassin"]``:
``{"result": "spam"|"ham"|"skipped"|"error", "score", "required", "tests", ...}``.

Arguments (``name value``):

``spamd_socket host:port|/path``
    where spamd listens (default ``127.0.0.1:783``).
``command headers|symbols|report``
    the spamd request (default ``headers``).
``spamd_user NAME``, ``reject SCORE``, ``munge_subject_threshold SCORE``,
``subject_prefix TEXT`` (default ``*** SPAM ***``), ``quarantine SCORE``,
``leave_old_headers drop|rename|keep``
    see above.
``on_error defer|accept|reject``
    spamd down or slower than ``timeout``: ``accept`` (default) logs, adds
    ``X-Not-Scanned`` and lets the message through; ``defer`` answers
    451 4.7.1; ``reject`` 554 5.7.0.
``max_size SIZE``
    larger messages are not scanned (default 512k; ``size_limit`` is the old name).
``connect_timeout``, ``timeout`` (default 5s, 60s), ``skip_relay_clients 1``,
``reject_type perm|temp``, ``loglevel``
    as for every scanner (docs/content-scanning.md).

Unlike qpsmtpd's plugin it streams the message instead of reading it into
memory, bounds every wait, and never lets a forged ``X-Spam-Flag`` through.

config/plugins::

    spamassassin spamd_socket 127.0.0.1:783 reject 10 munge_subject_threshold 5
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qptwisted import DECLINED, LOGINFO, Headers, HookAnswer, Transaction, arg
from qptwisted.lib.scanner import (
    ScannerAddress,
    ScannerError,
    ScannerPlugin,
    address_argument,
    connect,
    message_size,
    on_error_argument,
    size_argument,
    stream_message,
)

_SPAM_LINE = re.compile(r"(True|False|Yes|No)\s*;\s*(-?[\d.]+)\s*/\s*(-?[\d.]+)", re.IGNORECASE)
_REPORT_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s", re.MULTILINE)
_TESTS = re.compile(r"tests=(.*?)(?:\s+\w+=|$)", re.IGNORECASE | re.DOTALL)


@dataclass
class SpamdAnswer:
    """What spamd said about one message."""

    is_spam: bool
    score: float
    required: float
    body: bytes = b""
    tests: list[str] = field(default_factory=list)


def parse_answer(raw: bytes) -> SpamdAnswer:
    """Read spamd's answer (``SPAMD/1.1 0 EX_OK``, ``Spam: True ; 7.2 / 5.0``, blank line, body)."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = raw.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0].startswith("SPAMD/"):
        raise ScannerError(f"not a spamd answer: {raw[:80]!r}")
    status = lines[0].split(None, 2)
    if len(status) < 2 or status[1] != "0":
        raise ScannerError(f"spamd refused the request: {lines[0]}")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "spam":
            match = _SPAM_LINE.search(value)
            if match is None:
                break
            spam = match.group(1).lower() in ("true", "yes")
            return SpamdAnswer(spam, float(match.group(2)), float(match.group(3)), body)
    raise ScannerError(f"spamd's answer has no Spam: line: {head[:200]!r}")


def fold(words: list[str], width: int = 76) -> str:
    """Words joined by spaces, folded before ``width`` (a comma-separated word breaks after a comma)."""
    lines = [""]
    for word in words:
        for piece in re.findall(r"[^,]+,?", word) or [word]:
            separator = " " if lines[-1] and not lines[-1].endswith(",") else ""
            if lines[-1] and len(lines[-1]) + len(separator) + len(piece) > width:
                lines.append("\t" + piece)
            else:
                lines[-1] += separator + piece
    return "\n".join(lines)


class SpamAssassin(ScannerPlugin):
    """Score messages with spamd."""

    name = "spamassassin"
    daemon = "spamd"

    spamd_socket: ScannerAddress = address_argument(783, "127.0.0.1:783", "where spamd listens: host:port "
                                                    "or a Unix socket path")
    command: str = arg.choice(("headers", "symbols", "report"), "headers",
                              "the spamd request: headers (spamd's X-Spam fields), symbols or report "
                              "(fields written here; report adds X-Spam-Report)")
    spamd_user: str | None = arg.str(None, "spamd's User: (default: the recipient when there is one)")
    reject: float | None = arg.float(  # type: ignore[assignment]  # a score here, not 0|1|naughty
        None, "refuse messages scoring this or more (default: never)", aliases=("reject_threshold",))
    munge_subject_threshold: float | None = arg.float(None, "prefix the Subject from this score on")
    subject_prefix: str = arg.str("*** SPAM ***", "what goes before the Subject")
    quarantine: float | None = arg.float(None, "ask queue/quarantine to file messages scoring this or more")
    leave_old_headers: str = arg.choice(("drop", "rename", "keep"), "rename",
                                        "incoming X-Spam-* fields: drop, rename to X-Old-Spam-*, or keep "
                                        "(X-Spam-Flag is renamed even then)")
    on_error: str = on_error_argument("accept")
    max_size: int = size_argument(512 << 10, "skip larger messages (logged)", aliases=("size_limit",))

    async def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        self.old_headers(transaction.header)
        reason = self.skip_reason(transaction)
        if reason is not None:
            return self.skipped(transaction, reason)
        answer, outage = await self.scan_or_outage(transaction, lambda: self.check(transaction))
        if answer is None:
            return outage
        return self.act(transaction, answer)

    def old_headers(self, header: Headers) -> None:
        """Drop or rename incoming X-Spam-* fields; a forged X-Spam-Flag never survives as ours."""
        for name in dict.fromkeys(key for key in header.keys() if key.lower().startswith("x-spam-")):
            if self.leave_old_headers == "drop":
                header.remove(name)
            elif self.leave_old_headers == "rename" or name.lower() == "x-spam-flag":
                header.rename(name, "X-Old-" + name[2:])

    async def check(self, transaction: Transaction) -> SpamdAnswer:
        """Send the message to spamd and read its answer."""
        user = self.spamd_user or (transaction.recipients[0].address
                                   if len(transaction.recipients) == 1 else None)
        request = f"{self.command.upper()} SPAMC/1.5\r\nContent-length: {message_size(transaction)}\r\n"
        if user:
            request += f"User: {user}\r\n"
        connection = await connect(self, self.spamd_socket, self.connect_timeout)
        try:
            await connection.send(request.encode() + b"\r\n")
            await stream_message(self, transaction, connection)
            connection.finish_writing()
            raw = await connection.read_until_close()
        finally:
            connection.close()
        answer = parse_answer(raw)
        answer.tests = self.tests_of(answer)
        return answer

    def tests_of(self, answer: SpamdAnswer) -> list[str]:
        """The names of the rules that hit, from whichever answer the command gave."""
        text = answer.body.decode("utf-8", "replace")
        if self.command == "symbols":
            return [name for name in re.split(r"[,\s]+", text.strip()) if name]
        if self.command == "report":
            return [name for _, name in _REPORT_RULE.findall(text)]
        raw = Headers(answer.body.replace(b"\r\n", b"\n")).raw_values("X-Spam-Status")
        status = raw[0].decode("utf-8", "replace") if raw else ""
        found = _TESTS.search(status)
        return [name for name in re.split(r"[,\s]+", found.group(1) if found else "") if name]

    def act(self, transaction: Transaction, answer: SpamdAnswer) -> HookAnswer:
        """Headers, note, subject and the verdict for one scanned message."""
        header = transaction.header
        for name, value in self.spam_fields(answer):
            header.add(name, value)
        result = "spam" if answer.is_spam else "ham"
        note = self.note(transaction, result, score=answer.score, required=answer.required,
                         is_spam=answer.is_spam, tests=answer.tests)
        self.log(LOGINFO, f"{result}, score {answer.score:g}/{answer.required:g} "
                 f"tests={','.join(answer.tests) or '-'}")
        if answer.is_spam:
            self.adjust_karma(transaction, -1)
        if self.reject is not None and answer.score >= self.reject:
            note["action"] = "reject"
            return self.refusal(None, f"Message refused as spam (score {answer.score:g}, "
                                f"limit {self.reject:g})")
        if self.quarantine is not None and answer.score >= self.quarantine:
            note["action"] = "quarantine"
            transaction.notes["quarantine"] = f"{self.plugin_name}: score {answer.score:g}"
        if self.munge_subject_threshold is not None and answer.score >= self.munge_subject_threshold:
            subject = header.get("Subject", "") or ""
            if not subject.startswith(self.subject_prefix):
                header.replace("Subject", f"{self.subject_prefix} {subject}".rstrip())
        return DECLINED

    def spam_fields(self, answer: SpamdAnswer) -> list[tuple[str, str]]:
        """The X-Spam-* fields to add: spamd's own (``headers``) or written from the answer."""
        if self.command == "headers":
            theirs = Headers(answer.body.replace(b"\r\n", b"\n"))
            fields = []
            for name in dict.fromkeys(key for key in theirs.keys() if key.lower().startswith("x-spam-")):
                for raw in theirs.raw_values(name):
                    fields.append((name, raw.decode("utf-8", "replace").strip()))
            if fields:
                return fields
        verdict = "Yes" if answer.is_spam else "No"
        status = fold([f"{verdict}, score={answer.score:.1f}", f"required={answer.required:.1f}",
                       "tests=" + (",".join(answer.tests) or "none")])
        fields = [("X-Spam-Flag", "YES")] if answer.is_spam else []
        fields.append(("X-Spam-Status", status))
        stars = min(50, int(answer.score)) if answer.score >= 1 else 0
        if stars:
            fields.append(("X-Spam-Level", "*" * stars))
        if self.command == "report":
            lines = answer.body.decode("utf-8", "replace").splitlines()
            ruler = next((index for index, line in enumerate(lines) if line.startswith("----")), -1)
            rules = [line.rstrip() for line in lines[ruler + 1:] if line.strip()]
            if rules:
                fields.append(("X-Spam-Report", "".join(f"\n\t* {line}" for line in rules)))
        return fields
