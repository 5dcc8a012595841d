"""dmarc_report: DMARC aggregate reports (RFC 7489 ``rua``) for the domains whose mail we receive.

List it after ``dmarc`` in ``config/plugins``. For every message whose
From domain publishes a DMARC policy with a ``rua`` tag, the plugin records
at ``data_post_headers`` what ``dmarc`` found (the transaction note
``dmarc``): the client's address, the From domain, the disposition, whether
DKIM and SPF passed aligned, and the raw DKIM and SPF results (notes ``dkim``
and ``spf``). Messages refused by the policy are recorded too.

Records are counted per reporting period (``interval``, aligned to UTC
midnight for the default day) in an SQLite file. Every ``check_every``
seconds, the periods that have ended are written as RFC 7489 Appendix C
XML documents, one per policy domain, gzipped into the report email of
section 7.2.1.1, and handed to a queue plugin for sending: the plugin named
by ``queue`` (an instance from ``config/plugins``), else the ``queue``
chain. A report that cannot be handed on is tried again at the next check,
for at most ``keep`` seconds.

A ``rua`` address outside the policy domain's organizational domain gets
reports only if its domain agrees in DNS
(``<policy-domain>._report._dmarc.<rua-domain>`` has a ``v=DMARC1`` TXT
record, RFC 7489 7.1).

The report's sender (``email``) should be able to receive bounces, and
the queue that sends reports must reach the Internet: on a server whose
queue delivers to local mailboxes, load a relay as a second queue instance
for the reports (``queue/smtp-forward:reports 127.0.0.1:10025``) after the
first and name it with ``queue``; the first queue plugin answers every
incoming message, so the second only carries reports.

Arguments (``name value`` pairs):

``org_name NAME``
    who reports (default: config ``me``).
``email ADDRESS``
    the reports' sender (default ``dmarc-noreply@`` + config ``me``).
``interval N``
    the reporting period (default ``1d``; RFC 7489 asks for at least an hour).
``check_every N``
    how often ended periods are sent (default ``10m``).
``keep N``
    how long unsendable reports are retried (default ``3d``).
``queue NAME``
    the loaded queue plugin that sends the reports (default: the queue chain).
``db_dir DIR``
    where ``dmarc_report.sqlite`` lives (default: the engine's ``spool_dir``;
    relative: in the directory the server was started in).

config/plugins::

    sender_permitted_from reject 0
    dkim
    dmarc reject 1
    dmarc_report org_name example.org email dmarc-reports@example.org queue queue/smtp-forward:reports
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

from qptwisted import (
    DECLINED,
    LOGERROR,
    LOGINFO,
    LOGWARN,
    OK,
    Address,
    Connection,
    HookAnswer,
    HookResult,
    Plugin,
    Transaction,
    arg,
)
from qptwisted.lib.dmarc import organizational_domain, parse_record
from qptwisted.lib.dmarc_report import Report, Row, report_message, rua_addresses

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (period INTEGER, domain TEXT, tags TEXT, PRIMARY KEY (period, domain));
CREATE TABLE IF NOT EXISTS records (period INTEGER, domain TEXT, row TEXT, count INTEGER,
                                    PRIMARY KEY (period, domain, row));
"""


class _Aggregate:
    """The counts, in SQLite; every call blocks (the plugin runs them on the thread pool)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        with self.lock:
            self.db.executescript(_SCHEMA)

    def add(self, period: int, domain: str, tags: dict[str, str], row: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO policies VALUES (?, ?, ?)",
                            (period, domain, json.dumps(tags, sort_keys=True)))
            self.db.execute("INSERT INTO records VALUES (?, ?, ?, 1) ON CONFLICT (period, domain, row) "
                            "DO UPDATE SET count = count + 1", (period, domain, row))

    def due(self, before: int) -> list[tuple[int, str, dict[str, str], list[tuple[str, int]]]]:
        """Every (period, domain, policy tags, [(row, count)]) of the periods before ``before``."""
        with self.lock:
            policies = self.db.execute("SELECT period, domain, tags FROM policies WHERE period < ? "
                                       "ORDER BY period, domain", (before,)).fetchall()
            found = []
            for period, domain, tags in policies:
                rows = self.db.execute("SELECT row, count FROM records WHERE period = ? AND domain = ? "
                                       "ORDER BY row", (period, domain)).fetchall()
                found.append((period, domain, json.loads(tags), [(r, c) for r, c in rows]))
            return found

    def drop(self, period: int, domain: str) -> None:
        with self.lock:
            self.db.execute("DELETE FROM records WHERE period = ? AND domain = ?", (period, domain))
            self.db.execute("DELETE FROM policies WHERE period = ? AND domain = ?", (period, domain))

    def close(self) -> None:
        with self.lock:
            self.db.close()


class DMARCReport(Plugin):
    """Collects DMARC results and sends aggregate reports."""

    name = "dmarc_report"
    timeout = 120.0
    org_name: str | None = arg.str(None, "who reports (default: config me)")
    email: str | None = arg.str(None, "the reports' sender (default: dmarc-noreply@ + config me)")
    interval: float = arg.duration(86400, "the reporting period")
    check_every: float = arg.duration(600, "how often ended periods are sent")
    keep: float = arg.duration(3 * 86400, "how long unsendable reports are retried")
    queue: str | None = arg.str(None, "the loaded queue plugin that sends reports (default: the queue chain)")
    db_dir: Path | None = arg.path(None, "where dmarc_report.sqlite lives (default: spool_dir)", workdir=True)

    def register(self, *args: str) -> None:
        """Open the aggregate, start the sending timer."""
        from qptwisted import ArgumentError

        if self.interval < 60:
            raise ArgumentError(f"plugin {self.plugin_name}: argument interval: at least 60 seconds")
        self.receiver = self.me
        self.sender = self.email or f"dmarc-noreply@{self.me}"
        directory = Path(self.db_dir or self.engine.settings.spool_dir)
        self.aggregate = _Aggregate(directory / "dmarc_report.sqlite")
        self.engine.call_every(self.check_every, lambda: self.send_due())

    def close(self) -> None:
        """Close the aggregate."""
        self.aggregate.close()

    def period_of(self, when: float) -> int:
        """The start of the reporting period that contains ``when``."""
        return int(when // self.interval * self.interval)

    # -- collecting ------------------------------------------------------------------
    def hook_data_post_headers(self, transaction: Transaction) -> HookAnswer:
        info = transaction.notes.get("dmarc")
        if not isinstance(info, dict) or not isinstance(info.get("record"), dict) or \
                not rua_addresses(info["record"].get("rua", "")):
            return DECLINED
        spf = transaction.notes.get("spf") or {}
        dkim = [(str(d.get("domain", "")), str(d.get("selector", "")), str(d.get("result", "none")))
                for d in transaction.notes.get("dkim") or () if d.get("domain")]
        rcpt = transaction.recipients[0].host if transaction.recipients else ""
        spf_result = (str(spf.get("domain", "")), str(spf.get("scope", "mfrom")).replace("mailfrom", "mfrom"),
                      str(spf.get("result", "none"))) if spf.get("domain") else None
        dkim_ok = "pass" if info.get("dkim_aligned") else "fail"
        spf_ok = "pass" if info.get("spf_aligned") else "fail"
        row = Row(transaction.connection.remote_ip, info["domain"], info["disposition"], dkim_ok, spf_ok,
                  rcpt or "", tuple(dkim), spf_result)
        period = self.period_of(self.clock.seconds())
        d = self.defer_to_thread(self.aggregate.add, period, info["policy_domain"], info["record"],
                                 json.dumps(row.to_json(), sort_keys=True))
        return d.addCallbacks(lambda _: DECLINED, self._not_recorded)

    def _not_recorded(self, failure: Any) -> HookAnswer:
        self.log(LOGWARN, f"cannot record the DMARC result: {failure.getErrorMessage()}")
        return DECLINED

    # -- reporting -------------------------------------------------------------------
    def send_due(self, now: float | None = None) -> Deferred[None]:
        """Send the reports of every period that has ended by ``now`` (default: the clock's time).

        The timer calls this every ``check_every`` seconds.
        """
        return Deferred.fromCoroutine(self._send_due(float(self.clock.seconds()) if now is None else now))

    async def _send_due(self, now: float) -> None:
        due = await self.defer_to_thread(self.aggregate.due, self.period_of(now))
        for period, domain, tags, rows in due:
            report = Report(self.org_name or self.me, self.sender, f"{self.receiver}.{domain}.{period}",
                            period, period + int(self.interval) - 1, domain, tags,
                            [(Row.from_json(json.loads(row)), count) for row, count in rows])
            try:
                sent = await self.send(report, now)
            except Exception as err:
                self.log(LOGERROR, f"report for {domain}: {type(err).__name__}: {err}")
                sent = False
            if sent or now - period > self.keep:
                if not sent:
                    self.log(LOGWARN, f"giving up the report for {domain} of {report.begin}")
                await self.defer_to_thread(self.aggregate.drop, period, domain)

    async def recipients(self, domain: str, rua: str) -> list[str]:
        """The ``rua`` addresses that may get reports about ``domain`` (RFC 7489 7.1)."""
        allowed = []
        for address in rua_addresses(rua):
            target = address.rsplit("@", 1)[1].lower()
            if organizational_domain(target) == organizational_domain(domain):
                allowed.append(address)
                continue
            name = f"{domain}._report._dmarc.{target}"
            try:
                texts = await self.engine.resolver.lookup_txt(name)
            except Exception as err:
                self.log(LOGWARN, f"cannot check {name}: {err}; not reporting to {address} now")
                raise
            if any(parse_record(text) is not None for text in texts):
                allowed.append(address)
            else:
                self.log(LOGINFO, f"{target} does not accept reports about {domain}: skipping {address}")
        return allowed

    async def send(self, report: Report, now: float) -> bool:
        """Hand one report to the queue; True once it was accepted (or has nobody to go to)."""
        recipients = await self.recipients(report.domain, report.policy.get("rua", ""))
        if not recipients:
            return True
        raw = report_message(report, self.receiver, self.sender, recipients, now).as_bytes()
        head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        settings = self.engine.settings
        transaction = Transaction(Connection("127.0.0.1", 0, relay_client=True), settings.spool_dir,
                                  settings.size_threshold)
        try:
            transaction.sender = Address.parse(f"<{self.sender}>")
            for address in recipients:
                transaction.add_recipient(Address.parse(f"<{address}>"))
            transaction.raw_header = head + b"\n"
            transaction.body_write(body)
            transaction.data_size = len(head) + 2 + len(body)
            if self.queue:
                plugin: Any = self.engine.plugin(self.queue)
                answer = await maybeDeferred(plugin.hook_queue, transaction)
            else:
                answer = await maybeDeferred(self.engine.hooks.run, "queue", transaction)
        finally:
            transaction.close()
        code = answer.code if isinstance(answer, HookResult) else answer[0] if isinstance(answer, tuple) \
            else answer
        message = answer.message if isinstance(answer, HookResult) else \
            answer[1] if isinstance(answer, tuple) and len(answer) > 1 else ""
        if code == OK:
            self.log(LOGINFO, f"sent the report for {report.domain} ({len(report.rows)} rows) to "
                              f"{', '.join(recipients)}")
            return True
        self.log(LOGWARN, f"the queue did not take the report for {report.domain}: {code!s} {message or ''}")
        return False

