"""DMARC aggregate reports (RFC 7489 section 7.2): the XML document and the message that carries it.

:func:`aggregate_xml` writes the ``feedback`` document of Appendix C for one
policy domain and one reporting period; :func:`report_message` wraps it,
gzipped, in the email that section 7.2.1.1 describes (subject ``Report
Domain: ... Submitter: ... Report-ID: ...``, an ``application/gzip``
attachment named ``receiver!policy-domain!begin!end.xml.gz``);
:func:`rua_addresses` reads the ``mailto:`` URIs of a record's ``rua`` tag.
"""

from __future__ import annotations

import gzip
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import unquote


@dataclass(frozen=True)
class Row:
    """One row of a report: what was seen, how often (the ``record`` element)."""

    source_ip: str
    header_from: str
    disposition: str
    dkim: str
    spf: str
    envelope_to: str = ""
    #: ``(domain, selector, result)`` of each DKIM signature
    dkim_results: tuple[tuple[str, str, str], ...] = ()
    #: ``(domain, scope, result)`` of SPF, if it was checked
    spf_result: tuple[str, str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        """A plain dict (the aggregator stores rows as JSON)."""
        return {"source_ip": self.source_ip, "header_from": self.header_from, "disposition": self.disposition,
                "dkim": self.dkim, "spf": self.spf, "envelope_to": self.envelope_to,
                "dkim_results": [list(r) for r in self.dkim_results],
                "spf_result": list(self.spf_result) if self.spf_result else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Row:
        """The row of :meth:`to_json`."""
        spf = data.get("spf_result")
        return cls(data["source_ip"], data["header_from"], data["disposition"], data["dkim"], data["spf"],
                   data.get("envelope_to", ""), tuple(tuple(r) for r in data.get("dkim_results") or ()),
                   tuple(spf) if spf else None)  # type: ignore[arg-type]


@dataclass
class Report:
    """One aggregate report: who reports, about which domain's policy, for which period."""

    org_name: str
    email: str
    report_id: str
    begin: int
    end: int
    domain: str
    policy: Mapping[str, str]
    rows: list[tuple[Row, int]] = field(default_factory=list)
    extra_contact_info: str = ""


def _text(parent: ET.Element, tag: str, value: object) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = str(value)
    return element


def aggregate_xml(report: Report) -> bytes:
    """The RFC 7489 Appendix C ``feedback`` document, UTF-8."""
    root = ET.Element("feedback")
    _text(root, "version", "1.0")
    metadata = ET.SubElement(root, "report_metadata")
    _text(metadata, "org_name", report.org_name)
    _text(metadata, "email", report.email)
    if report.extra_contact_info:
        _text(metadata, "extra_contact_info", report.extra_contact_info)
    _text(metadata, "report_id", report.report_id)
    dates = ET.SubElement(metadata, "date_range")
    _text(dates, "begin", report.begin)
    _text(dates, "end", report.end)
    published = ET.SubElement(root, "policy_published")
    _text(published, "domain", report.domain)
    policy = report.policy
    _text(published, "adkim", policy.get("adkim", "r").lower())
    _text(published, "aspf", policy.get("aspf", "r").lower())
    _text(published, "p", policy.get("p", "none").lower())
    _text(published, "sp", policy.get("sp", policy.get("p", "none")).lower())
    _text(published, "pct", policy.get("pct", "100"))
    for row, count in report.rows:
        record = ET.SubElement(root, "record")
        row_element = ET.SubElement(record, "row")
        _text(row_element, "source_ip", row.source_ip)
        _text(row_element, "count", count)
        evaluated = ET.SubElement(row_element, "policy_evaluated")
        _text(evaluated, "disposition", row.disposition)
        _text(evaluated, "dkim", row.dkim)
        _text(evaluated, "spf", row.spf)
        identifiers = ET.SubElement(record, "identifiers")
        if row.envelope_to:
            _text(identifiers, "envelope_to", row.envelope_to)
        _text(identifiers, "header_from", row.header_from)
        results = ET.SubElement(record, "auth_results")
        for domain, selector, result in row.dkim_results:
            dkim = ET.SubElement(results, "dkim")
            _text(dkim, "domain", domain)
            if selector:
                _text(dkim, "selector", selector)
            _text(dkim, "result", result)
        if row.spf_result is not None:
            spf = ET.SubElement(results, "spf")
            _text(spf, "domain", row.spf_result[0])
            _text(spf, "scope", row.spf_result[1])
            _text(spf, "result", row.spf_result[2])
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def report_message(report: Report, receiver: str, sender: str, recipients: Iterable[str],
                   now: float | None = None) -> EmailMessage:
    """The email of RFC 7489 7.2.1.1 carrying ``report``, gzipped."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(now if now is not None else time.time())
    message["Message-ID"] = make_msgid(domain=receiver)
    message["Subject"] = (f"Report Domain: {report.domain} Submitter: {receiver} "
                          f"Report-ID: <{report.report_id}>")
    message.set_content(f"DMARC aggregate report for {report.domain} from {receiver}, "
                        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(report.begin))} to "
                        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(report.end))} UTC.\n")
    name = f"{receiver}!{report.domain}!{report.begin}!{report.end}.xml.gz"
    message.add_attachment(gzip.compress(aggregate_xml(report), mtime=0), maintype="application",
                           subtype="gzip", filename=name)
    return message


def rua_addresses(rua: str) -> list[str]:
    """The mailto: addresses of a ``rua`` tag (size limits ``!10m`` and other schemes dropped)."""
    found = []
    for uri in rua.split(","):
        uri = uri.strip()
        if not uri.lower().startswith("mailto:"):
            continue
        address = unquote(uri[len("mailto:"):].split("!", 1)[0].split("?", 1)[0]).strip()
        if "@" in address:
            found.append(address)
    return found


__all__ = ["Report", "Row", "aggregate_xml", "report_message", "rua_addresses"]
