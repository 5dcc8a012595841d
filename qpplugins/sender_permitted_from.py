"""sender_permitted_from: SPF (RFC 7208) for the envelope sender.

At ``mail`` the SPF record of the sender's domain (for the null sender:
of the HELO name, RFC 7208 2.3) is evaluated with pyspf on the engine's
thread pool; its DNS goes to the engine's nameservers (config ``resolvers``)
through dnspython. The result is stored:

- Authentication-Results: ``spf=<result> smtp.mailfrom=<sender>`` (or
  ``smtp.helo=<name>``), assembled by the engine;
- a ``Received-SPF`` header (RFC 7208 9.1), added at ``data_post_headers``;
- transaction notes ``spfquery`` (the result word) and ``spf`` (a dict with
  ``result``, ``domain``, ``scope`` and ``explanation``, read by ``dmarc``).

The refusal, if any, comes at ``rcpt`` (as qpsmtpd does), so mail to
``postmaster`` and ``abuse`` still gets through. Relay clients and
authenticated users are not checked.

Arguments (``name value`` pairs):

``reject N``
    which results are refused (default: config ``spfbehavior``, else 1):

    == ===========================================================
    0  never refuse; only record the result
    1  fail: DENY
    2  fail: DENY; softfail: DENYSOFT
    3  fail, softfail: DENY
    4  fail, softfail: DENY; neutral: DENYSOFT
    5  fail, softfail, neutral: DENY
    6  as 5, plus temperror: DENYSOFT and permerror: DENY
    == ===========================================================

``no_dmarc_policy 0|1``
    with 1, refuse only senders whose domain publishes no DMARC record
    (leaving the decision to the ``dmarc`` plugin otherwise).
``timeout N``
    seconds for the whole SPF evaluation (default 20, RFC 7208 4.6.4).

Config files: ``spfbehavior`` (the default for ``reject``).

config/plugins::

    sender_permitted_from reject 2
"""

from __future__ import annotations

import threading
from typing import Any

import dns.exception
import dns.resolver
import spf
from twisted.internet.defer import Deferred

from qptwisted import (
    DECLINED,
    DENY,
    DENYSOFT,
    LOGINFO,
    LOGWARN,
    Address,
    ConfigError,
    HookAnswer,
    Transaction,
    arg,
)
from qptwisted.lib.policy import PolicyPlugin

SPECIAL_RECIPIENTS = frozenset({"postmaster", "abuse"})

#: reject level -> {result: code}
POLICIES: dict[int, dict[str, Any]] = {
    0: {},
    1: {"fail": DENY},
    2: {"fail": DENY, "softfail": DENYSOFT},
    3: {"fail": DENY, "softfail": DENY},
    4: {"fail": DENY, "softfail": DENY, "neutral": DENYSOFT},
    5: {"fail": DENY, "softfail": DENY, "neutral": DENY},
    6: {"fail": DENY, "softfail": DENY, "neutral": DENY, "temperror": DENYSOFT, "permerror": DENY},
}

_local = threading.local()
_original_lookup = spf.DNSLookup


def _lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[tuple[Any, Any]]:
    """pyspf's DNS hook: dnspython, on the resolver of the current SPF check."""
    resolver: dns.resolver.Resolver | None = getattr(_local, "resolver", None)
    if resolver is None:
        return _original_lookup(name, qtype, strict, timeout)  # type: ignore[no-any-return]
    records: list[tuple[Any, Any]] = []
    try:
        answers = resolver.resolve(name, qtype, lifetime=timeout, raise_on_no_answer=False,
                                   search=False)
        for rdata in answers:
            if qtype in ("A", "AAAA"):
                records.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                records.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                records.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                records.append(((name, qtype), rdata.strings))
    except dns.resolver.NXDOMAIN:
        pass
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as err:
        raise spf.TempError(f"DNS {err}") from err
    return records


spf.DNSLookup = _lookup


def evaluate(resolver: dns.resolver.Resolver, ip: str, sender: str, helo: str, receiver: str,
             timeout: float) -> tuple[str, str, str]:
    """Run one SPF check (blocking): ``(result, explanation, Received-SPF value)``."""
    _local.resolver = resolver
    try:
        query = spf.query(i=ip, s=sender, h=helo, receiver=receiver, querytime=timeout)
        result, _code, explanation = query.check()
        header = query.get_header(result, receiver)
        return result, explanation, header
    finally:
        _local.resolver = None


class SenderPermittedFrom(PolicyPlugin):
    """SPF at MAIL, refusals at RCPT, results for Authentication-Results and DMARC."""

    name = "sender_permitted_from"
    reject = arg.choice([str(level) for level in POLICIES], None, "which results are refused, "
                                    "0..6 (default: config spfbehavior, else 1)")
    no_dmarc_policy: bool = arg.bool(False, "refuse only senders whose domain publishes no DMARC record")
    spf_timeout: float = arg.duration(20, "seconds for the whole SPF evaluation", aliases=("timeout",))

    def register(self, *args: str) -> None:
        """``reject`` defaults to config ``spfbehavior``."""
        level = self.reject or self.config("spfbehavior") or "1"
        if not level.isdigit() or int(level) not in POLICIES:
            raise ConfigError(f"{self.plugin_name}: config spfbehavior must be 0..6, got {level!r}")
        self.level = int(level)

    def hook_mail(self, transaction: Transaction, sender: Address, **params: Any) -> HookAnswer:
        connection = transaction.connection
        if connection.relay_client or connection.auth_user:
            self.log(LOGINFO, "skip, relay client or authenticated")
            return DECLINED
        helo = connection.hello_host or ""
        if sender.is_null and not helo:
            return DECLINED
        resolver = self.engine.resolver.dnspython()
        receiver = self.engine.settings.me
        work: Deferred[tuple[str, str, str]] = self.defer_to_thread(
            evaluate, resolver, connection.remote_ip, sender.address, helo, receiver, self.spf_timeout)
        return work.addCallback(self._record, transaction, sender, helo)

    def _record(self, outcome: tuple[str, str, str], transaction: Transaction, sender: Address,
                helo: str) -> HookAnswer:
        result, explanation, header = outcome
        scope, domain = ("helo", helo) if sender.is_null else ("mailfrom", sender.host.lower())
        transaction.notes["spfquery"] = result
        transaction.notes["spf"] = {"result": result, "domain": domain, "scope": scope,
                                    "explanation": explanation}
        transaction.notes["spf_header"] = header
        identity = f"smtp.helo={helo}" if sender.is_null else f"smtp.mailfrom={sender.address}"
        transaction.auth_results.append(f"spf={result} {identity}")
        self.log(LOGINFO, f"{result}, {explanation}")
        return DECLINED

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        result = transaction.notes.get("spfquery")
        code = POLICIES[self.level].get(result) if result else None
        if code is None:
            return DECLINED
        if (rcpt.user or "").lower() in SPECIAL_RECIPIENTS:
            self.log(LOGINFO, f"skip, special recipient {rcpt.user}")
            return DECLINED
        info = transaction.notes["spf"]
        message = (f"SPF {result}: {info['explanation']}" if result in ("fail", "permerror")
                   else f"SPF {result} for {info['domain']}, try again later" if code is DENYSOFT
                   else f"SPF {result}: {info['domain']} does not designate your address")
        if not self.no_dmarc_policy:
            return code, message
        return self._has_dmarc(info["domain"]).addCallback(
            lambda published: DECLINED if published else (code, message))

    def _has_dmarc(self, domain: str) -> Deferred[bool]:
        from qptwisted.lib.dmarc import find_policy_record

        def errored(failure: Any) -> bool:
            self.log(LOGWARN, f"DMARC lookup for {domain}: {failure.getErrorMessage()}")
            return False

        return find_policy_record(self.engine.resolver, domain).addCallbacks(
            lambda found: found is not None, errored)

    def hook_data_post_headers(self, transaction: Transaction) -> HookAnswer:
        header = transaction.notes.get("spf_header")
        if header:
            transaction.prepend_header("Received-SPF", header)
        return DECLINED
