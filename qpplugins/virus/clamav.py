"""virus/clamav: scan each message with ClamAV's command-line scanner, ``clamdscan`` or ``clamscan``.

qpsmtpd's ``virus/clamav``: after DATA the message (headers and body) goes to
the scanner, which runs as a program per message on the engine's terms (never
blocking the reactor, killed after ``timeout``). The scanner reads the message
on its standard input (``-``), so it needs no access to the spool directory
(qpsmtpd handed it a spool file name and had to loosen the spool's
permissions for ``clamd``).

What the scanner's exit code means:

0
    clean: an ``X-Virus-Checked: Checked by ClamAV on <me>`` header is added;
1
    a virus: with ``action=reject`` the message is refused (``552 Virus
    Found: NAME``); with ``action=add-header`` (the default) it is accepted
    with ``X-Virus-Found: Yes`` and ``X-Virus-Details: NAME``;
anything else, or killed
    the scanner failed (logged with what it printed): ``452`` (try later),
    or accepted unscanned with ``declined_on_fail``.

Arguments, as ``name=value`` (qpsmtpd's form) or ``name value``:

``clamscan_path=PATH``
    the scanner (also qpsmtpd's single leading ``PATH``); default
    ``clamdscan`` if it is installed (fast: the ``clamd`` daemon scans), else
    ``clamscan`` (loads the signatures for every message).
``clamd_conf=PATH``
    passed to ``clamdscan`` as ``--config-file=PATH`` (default: the one
    ``clamdscan`` was built with; qpsmtpd's ``/etc/clamd.conf`` does not exist
    on Debian). ``clamscan`` takes no config file.
``database=PATH``
    passed to ``clamscan`` as ``--database=PATH``: a signature file or
    directory other than the installed one.
``action=add-header|reject``
    what a virus gets (default ``add-header``).
``max_size=BYTES``
    larger messages are not scanned (default 524288, as qpsmtpd).
``declined_on_fail``
    a scanner failure lets the message through unscanned instead of ``452``.
``timeout=S``
    kill a scanner still running after S seconds (default 120): ``452``.
``tmp_dir=DIR``, ``back_compat``
    accepted for qpsmtpd and ignored (no temporary file is written; the
    options for ClamAV before 0.80 are gone).

config/plugins::

    virus/clamav clamscan_path=/usr/bin/clamdscan action=reject max_size=10485760
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from twisted.internet.defer import Deferred

from qptwisted import DECLINED, DENY, DENYSOFT, LOGDEBUG, LOGERROR, LOGINFO, LOGWARN, Plugin, Transaction, arg
from qptwisted.lib.program import ProgramNotStarted, ProgramResult, run_program

#: "stdin: Eicar-Signature FOUND" -> the virus name
_FOUND = re.compile(r"^.*?:\s*(\S.*?)\s+FOUND$", re.MULTILINE)


class ClamAV(Plugin):
    """Scan messages with clamdscan or clamscan after DATA."""

    name = "virus/clamav"
    #: the reactor used to spawn (tests may replace it); timers use the engine clock
    reactor: Any = None

    path: str | None = arg.str(None, "the scanner (qpsmtpd's leading path argument)", positional=True)
    clamscan_path: str | None = arg.str(None, "the scanner: clamdscan or clamscan (default: clamdscan if "
                                        "installed, else clamscan)")
    clamd_conf: str | None = arg.str(None, "clamdscan's --config-file (default: its own)")
    database: str | None = arg.str(None, "clamscan's --database: signature file or directory")
    action: str = arg.choice(("add-header", "reject"), "add-header", "what a virus gets: a header, or 552")
    max_size: int = arg.int(512 * 1024, "larger messages (bytes) are not scanned")
    declined_on_fail: bool = arg.flag("accept unscanned when the scanner fails (instead of 452)")
    scan_timeout: float = arg.duration(120, "kill a scanner still running after this long (452)",
                                       aliases=("timeout",))
    tmp_dir: str | None = arg.str(None, "accepted for qpsmtpd; the scanner reads the message on stdin")
    back_compat: bool = arg.flag("accepted for qpsmtpd (ClamAV before 0.80); ignored")

    def register(self, *args: str) -> None:
        """Find the scanner."""
        self.scanner = self.clamscan_path or self.path or shutil.which("clamdscan") or \
            shutil.which("clamscan") or "clamscan"
        self.daemon = "clamdscan" in os.path.basename(self.scanner)

    def argv(self) -> list[str]:
        """The scanner's command line: report on stdout, no summary, scan standard input."""
        options = ["--stdout", "--no-summary"]
        if self.daemon and self.clamd_conf:
            options.append(f"--config-file={self.clamd_conf}")
        if not self.daemon and self.database:
            options.append(f"--database={self.database}")
        return [self.scanner, *options, "-"]

    def hook_data_post(self, transaction: Transaction) -> Any:
        if transaction.data_size > self.max_size:
            self.log(LOGWARN, f"Mail too large to scan ({transaction.data_size} vs {self.max_size})")
            return DECLINED
        return Deferred.fromCoroutine(self.scan(transaction))

    async def scan(self, transaction: Transaction) -> Any:
        """Run the scanner on the message and act on its exit code."""
        argv = self.argv()
        self.log(LOGDEBUG, f"running {' '.join(argv)}")
        try:
            result = await run_program(self.clock, argv, {0: transaction.iter_message()}, self.scan_timeout,
                                       reactor=self.reactor)
        except ProgramNotStarted as err:
            return self.failed(str(err))
        if result.code == 0:
            self.log(LOGINFO, "pass, no virus found")
            transaction.header.add("X-Virus-Checked", f"Checked by ClamAV on {self.me}")
            return DECLINED
        if result.code == 1:
            return self.found(transaction, result)
        how = "was killed" if result.code is None else f"exited with {result.code}"
        return self.failed(f"{self.scanner} {how}: {result.output or 'no output'}")

    def found(self, transaction: Transaction, result: ProgramResult) -> Any:
        """A virus: refuse, or mark the message."""
        names = " ".join(_FOUND.findall(result.output)) or "unknown virus"
        self.log(LOGINFO, f"fail, virus found: {names}")
        if self.action == "reject":
            return DENY, f"Virus Found: {names}"
        transaction.header.add("X-Virus-Found", "Yes")
        transaction.header.add("X-Virus-Details", names)
        return DECLINED

    def failed(self, why: str) -> Any:
        """The scanner could not say: try later, or let the message through with ``declined_on_fail``."""
        self.log(LOGERROR, f"ClamAV error: {why}")
        if self.declined_on_fail:
            return DECLINED
        return DENYSOFT, "Virus scanner unavailable, try again later"
