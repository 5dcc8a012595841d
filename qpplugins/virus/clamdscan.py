"""virus/clamdscan: scan each message with ClamAV's clamd; refuse, mark or quarantine what it finds.

At ``data_post`` the message is streamed from the spool to clamd with its
``zINSTREAM`` command (TCP or a Unix socket): 64 KiB chunks, each behind its
4-byte length, read from the spool on the thread pool and written with flow
control, then the zero-length chunk that ends the stream. clamd parses the
MIME structure itself, so a virus in a base64 attachment is found.

* Found, ``deny_viruses yes`` (default): refused, ``550 5.7.1 Virus found: NAME``
  (``451 4.7.1`` with ``reject_type temp``).
* Found, ``deny_viruses no``: accepted with ``X-Virus-Found: NAME``.
* Found, ``deny_viruses quarantine``: accepted with ``X-Virus-Found`` and
  filed by ``queue/quarantine`` instead of being delivered.
* Clean: ``X-Virus-Checked: Checked by ClamAV on <me>``.
* clamd answers ``INSTREAM size limit exceeded`` (the message is larger
  than its ``StreamMaxLength``): not scanned, logged and noted as skipped,
  exactly like a message over ``max_size``, never passed off as clean. Keep
  ``max_size`` at or below clamd's ``StreamMaxLength`` (default 25M).
* clamd down, slow or confused: ``on_error`` (default ``defer``: 451 4.7.1).

Incoming ``X-Virus-Checked`` and ``X-Virus-Found`` fields are removed first:
only ours remain. The result is in ``transaction.notes["virus/clamdscan"]``
(``{"result": "clean"|"virus"|"skipped"|"error", "virus": NAME, ...}``) and
a found virus also in ``transaction.notes["virus"]``.

Arguments (``name value``):

``clamd_socket host:port|/path``
    where clamd listens (default ``/var/run/clamav/clamd.ctl``, Debian's socket; TCP port 3310
    when only a host is given).
``deny_viruses yes|no|quarantine``
    see above.
``scan_all 1|0``
    0 scans only MIME messages with attachments (``Content-Type: multipart/*``); default 1.
``max_size SIZE``
    larger messages are not scanned (default 25M).
``on_error defer|accept|reject``, ``connect_timeout``, ``timeout`` (default 5s, 60s),
``skip_relay_clients 1``, ``reject_type perm|temp``, ``loglevel``
    as for every scanner (docs/content-scanning.md).

config/plugins::

    virus/clamdscan clamd_socket /var/run/clamav/clamd.ctl deny_viruses yes
"""

from __future__ import annotations

import struct

from qptwisted import DECLINED, LOGINFO, LOGWARN, HookAnswer, Transaction, arg
from qptwisted.lib.scanner import (
    ScannerAddress,
    ScannerError,
    ScannerPlugin,
    address_argument,
    connect,
    size_argument,
    stream_message,
)

#: what clamd says when a stream is longer than its StreamMaxLength
SIZE_LIMIT = "INSTREAM size limit exceeded"


class ClamdAnswer:
    """clamd's verdict on one stream."""

    __slots__ = ("virus", "too_big", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.too_big = SIZE_LIMIT in text
        self.virus: str | None = None
        if self.too_big:
            return
        if text.endswith(" FOUND"):
            self.virus = text.removeprefix("stream:").removesuffix(" FOUND").strip()
        elif text.endswith("ERROR") or not text.endswith("OK"):
            raise ScannerError(f"clamd: {text or 'empty answer'}")


def frame(chunk: bytes) -> bytes:
    """One INSTREAM chunk: its length (4 bytes, network order), then the bytes."""
    return struct.pack("!I", len(chunk)) + chunk


class ClamdScan(ScannerPlugin):
    """Scan messages with clamd."""

    name = "virus/clamdscan"
    daemon = "clamd"

    clamd_socket: ScannerAddress = address_argument(3310, "/var/run/clamav/clamd.ctl",
                                                    "where clamd listens: a Unix socket path or host:port")
    deny_viruses: str = arg.choice(("yes", "no", "quarantine", "1", "0"), "yes",
                                   "yes: refuse infected mail; no: add X-Virus-Found; quarantine: "
                                   "X-Virus-Found and file it with queue/quarantine")
    scan_all: bool = arg.bool(True, "0: only scan MIME messages with attachments (multipart)")
    max_size: int = size_argument(25 << 20, "skip larger messages (logged); keep it <= clamd's "
                                  "StreamMaxLength")

    async def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        header = transaction.header
        header.remove("X-Virus-Checked")
        header.remove("X-Virus-Found")
        reason = self.skip_reason(transaction)
        if reason is None and not self.scan_all:
            content_type = (header.get("Content-Type") or "").strip().lower()
            if not content_type.startswith("multipart/"):
                reason = "not a multipart message (scan_all 0)"
        if reason is not None:
            return self.skipped(transaction, reason)
        answer, outage = await self.scan_or_outage(transaction, lambda: self.check(transaction))
        if answer is None:
            return outage
        if answer.too_big:
            return self.skipped(transaction, f"larger than clamd's StreamMaxLength ({answer.text})")
        if answer.virus is None:
            self.note(transaction, "clean")
            self.log(LOGINFO, "clean")
            header.add("X-Virus-Checked", f"Checked by ClamAV on {self.me}")
            return DECLINED
        return self.found(transaction, answer.virus)

    async def check(self, transaction: Transaction) -> ClamdAnswer:
        """Stream the message with zINSTREAM and read the verdict."""
        connection = await connect(self, self.clamd_socket, self.connect_timeout)
        try:
            await connection.send(b"zINSTREAM\0")
            # clamd answers early (and closes) when the stream passes its StreamMaxLength
            complete = await stream_message(self, transaction, connection, frame,
                                            stop=lambda: bool(connection.buffer) or connection.eof)
            if complete:
                await connection.send(frame(b""))
            raw = await connection.read_until(b"\0")
        finally:
            connection.close()
        return ClamdAnswer(raw.decode("utf-8", "replace").strip())

    def found(self, transaction: Transaction, virus: str) -> HookAnswer:
        """What to do with an infected message."""
        self.log(LOGWARN, f"virus found: {virus}")
        note = self.note(transaction, "virus", virus=virus)
        transaction.notes["virus"] = virus
        self.adjust_karma(transaction, -1)
        if self.deny_viruses in ("yes", "1"):
            note["action"] = "reject"
            return self.refusal(None, f"Virus found: {virus}")
        transaction.header.add("X-Virus-Found", virus)
        if self.deny_viruses == "quarantine":
            note["action"] = "quarantine"
            transaction.notes["quarantine"] = f"{self.plugin_name}: {virus}"
        return DECLINED
