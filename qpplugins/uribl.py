"""uribl: look up the domains of URIs in the message body in URI block lists.

At ``data_post`` the text parts of the message (decoded from
quoted-printable/base64; the headers too with ``scan-headers 1``) are
searched for URIs and bare ``www.`` host names. Each host is reduced to its
registrable domain (Public Suffix List) and looked up as ``<domain>.<zone>``
in every zone (with ``checkip 1`` IP hosts as ``<reversed ip>.<zone>``). An
answer of ``127.0.0.1`` (the lists' "query refused") is ignored. Domains in
``uribl_whitelist_domains`` are not looked up. A zone that times out or
answers SERVFAIL counts as "not listed".

What happens to a listed message is the zone's action, else the ``action``
argument: ``deny`` (DENY), ``denysoft`` (DENYSOFT), ``add-header``
(``X-URIBL: <domain> listed in <zone>``), or ``log``.

Arguments (``name value`` pairs):

``action deny|denysoft|add-header|log``
    default ``add-header``.
``timeout N``
    seconds per lookup (default: the engine's ``dns_timeout``).
``scan-headers 0|1``
    also scan the header block (default 0; ``scan_headers`` works too).
``checkip 0|1``
    also look up IP-address URIs (default 0).
``max_domains N``
    look up at most N distinct domains per message (default 20).
``max_size N``
    scan at most N bytes of body (default 1048576).

Config files:

``uribl_zones``
    ``zone [mask[,mask...]] [action]`` per line; with masks only answers
    whose last octet has one of those bits count (SURBL style).
``uribl_whitelist_domains``
    registrable domains never looked up.

config/plugins::

    uribl action deny timeout 5
"""

from __future__ import annotations

import email
import ipaddress
import re
from email import policy
from typing import Any

from twisted.internet import defer

from qptwisted import DECLINED, DENY, DENYSOFT, LOGINFO, LOGWARN, HookAnswer, Transaction, arg
from qptwisted.lib.dmarc import organizational_domain
from qptwisted.lib.policy import PolicyPlugin

ACTIONS = ("deny", "denysoft", "add-header", "log")
_URI = re.compile(r"""(?:(?:https?|ftp)://|mailto:[^@\s<>"]+@|\bwww\.)([A-Za-z0-9._-]+)""", re.IGNORECASE)


def extract_hosts(text: str) -> list[str]:
    """Host names and IPs of the URIs in ``text``, in order of appearance, without duplicates."""
    hosts: list[str] = []
    for match in _URI.finditer(text):
        host = match.group(1).strip(".").lower()
        if match.group(0).lower().startswith("www."):
            host = "www." + host
        if host and host not in hosts:
            hosts.append(host)
    return hosts


class URIBL(PolicyPlugin):
    """URI block lists on the message body."""

    name = "uribl"
    action: str = arg.choice(ACTIONS, "add-header", "what a listed message gets, unless its zone says")
    scan_headers: bool = arg.bool(False, "also scan the header block")
    checkip: bool = arg.bool(False, "also look up IP-address URIs")
    max_domains: int = arg.int(20, "distinct domains looked up per message")
    max_size: int = arg.int(1 << 20, "bytes of body scanned")
    lookup_timeout: float | None = arg.duration(None, "seconds per DNS lookup (default: the engine's "
                                                "dns_timeout)", aliases=("timeout",))

    def register(self, *args: str) -> None:
        """Read the zones."""
        self.zones: list[tuple[str, set[int], str]] = []
        for line in self.config_list("uribl_zones"):
            words = line.split()
            masks: set[int] = set()
            action = self.action
            for word in words[1:]:
                if word in ACTIONS:
                    action = word
                else:
                    masks.update(int(m) for m in word.split(",") if m.isdigit())
            self.zones.append((words[0].strip(".").lower(), masks, action))
        self.whitelist = {d.lower().strip(".") for d in self.config_list("uribl_whitelist_domains")}

    def text_of(self, transaction: Transaction) -> str:
        """The decoded text parts of the message (bounded by ``max_size``)."""
        limit = self.max_size
        raw = transaction.header_bytes() + transaction.body_bytes()[:limit]
        message = email.message_from_bytes(raw, policy=policy.compat32)
        texts = [transaction.header_bytes().decode("utf-8", "replace")] \
            if self.scan_headers else []
        for part in message.walk():
            if part.is_multipart() or part.get_content_maintype() != "text":
                continue
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
        return "\n".join(texts)

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        if not self.zones:
            self.log(LOGWARN, "skip, no zones in config/uribl_zones")
            return DECLINED
        names: list[str] = []
        for host in extract_hosts(self.text_of(transaction)):
            try:
                ipaddress.ip_address(host)
                name = host if self.checkip else ""
            except ValueError:
                name = organizational_domain(host) if "." in host else ""
            if name and name not in names and name not in self.whitelist:
                names.append(name)
        names = names[: self.max_domains]
        if not names:
            return DECLINED
        resolver = self.engine.resolver
        pairs = [(name, zone) for name in names for zone in self.zones]
        queries = [(resolver.dnsbl_query(name, zone[0], self.lookup_timeout) if _is_ip(name) else
                    resolver.rhsbl_query(name, zone[0], self.lookup_timeout)).addErrback(self._error, zone[0])
                   for name, zone in pairs]

        def decide(answers: list[list[str] | None]) -> HookAnswer:
            for (name, (zone, masks, action)), records in zip(pairs, answers, strict=True):
                hits = [r for r in records or () if r != "127.0.0.1" and
                        (not masks or any(int(r.rsplit(".", 1)[1]) & m for m in masks))]
                if not hits:
                    continue
                self.log(LOGINFO, f"{name} listed in {zone} ({', '.join(hits)}), action {action}")
                transaction.notes.setdefault("uribl", []).append((name, zone))
                if action == "deny":
                    return DENY, f"Message contains a URI listed in {zone} ({name})"
                if action == "denysoft":
                    return DENYSOFT, f"Message contains a URI listed in {zone} ({name})"
                if action == "add-header":
                    transaction.prepend_header("X-URIBL", f"{name} listed in {zone}")
            return DECLINED

        return defer.gatherResults(queries).addCallback(decide)

    def _error(self, failure: Any, zone: str) -> None:
        self.log(LOGWARN, f"{zone}: {failure.getErrorMessage()}; treated as not listed")
        return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
