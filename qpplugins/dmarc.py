"""dmarc: DMARC (RFC 7489) policy evaluation after SPF and DKIM.

At ``data_post_headers`` (list it after ``sender_permitted_from`` and
``dkim`` in ``config/plugins``) the domain of the ``From`` header is taken,
its DMARC record looked up at ``_dmarc.<domain>``, else at
``_dmarc.<organizational domain>`` (from the Public Suffix List package
``publicsuffixlist``), and the message passes when SPF passed for an aligned
envelope domain or a DKIM signature of an aligned domain passed (``adkim``
and ``aspf``: relaxed = same organizational domain, strict = same domain).
The result goes into Authentication-Results as ``dmarc=pass|fail|none|
temperror|permerror (p=<policy> dis=<disposition>) header.from=<domain>``
and into the transaction note ``dmarc`` (a dict; with a policy it also holds
the domain that published it, ``policy_domain``, and the record's tags,
``record``, for ``dmarc_report``).

The disposition is carried out at ``data_post``: ``reject`` refuses
(``pct`` is honoured), ``quarantine`` adds ``X-DMARC-Quarantine: yes`` for
the delivery agent's filters; ``sp`` applies to subdomains. A message
without a ``From`` header, or with several From addresses, is refused (RFC
7489 6.6.1). Relay clients and authenticated users are not checked.

Arguments (``name value`` pairs):

``reject 1|0|naughty``
    carry out ``p=reject`` (default 1); 0 only records the result.
``reject_type perm|temp|...``
    default ``perm``.
``timeout N``
    seconds per lookup (default: the engine's ``dns_timeout``).

config/plugins::

    sender_permitted_from reject 0
    dkim
    dmarc reject 1
"""

from __future__ import annotations

import random
from email.utils import getaddresses
from typing import Any

from qptwisted import DECLINED, DENY, LOGINFO, LOGWARN, HookAnswer, Transaction, arg
from qptwisted.lib.dmarc import aligned, find_policy_record
from qptwisted.lib.dns import DNSTempError
from qptwisted.lib.policy import PolicyPlugin, reject_type_argument


class DMARC(PolicyPlugin):
    """DMARC evaluation and disposition."""

    name = "dmarc"
    reject_type = reject_type_argument("perm")
    lookup_timeout: float | None = arg.duration(None, "seconds per DNS lookup (default: the engine's "
                                                "dns_timeout)", aliases=("timeout",))

    def hook_data_post_headers(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        if connection.relay_client or connection.auth_user:
            return DECLINED
        values = [str(v) for v in transaction.header.get_all("From", [])]
        addresses = [a for _, a in getaddresses(values) if a]
        domains = {a.rsplit("@", 1)[1].lower() for a in addresses if "@" in a}
        if not addresses or len(domains) != 1:
            why = "no From header" if not addresses else "From header with several domains"
            transaction.notes["dmarc"] = {"result": "permerror", "reason": why, "disposition": "reject"}
            transaction.auth_results.append(f"dmarc=permerror ({why})")
            return DECLINED
        from_domain = domains.pop()
        lookup = find_policy_record(self.engine.resolver, from_domain, self.lookup_timeout)
        return lookup.addCallbacks(self._evaluate, self._failed, callbackArgs=(transaction, from_domain),
                                   errbackArgs=(transaction, from_domain))

    def _failed(self, failure: Any, transaction: Transaction, from_domain: str) -> HookAnswer:
        failure.trap(DNSTempError)
        self.log(LOGWARN, f"policy lookup for {from_domain}: {failure.getErrorMessage()}")
        transaction.notes["dmarc"] = {"result": "temperror", "domain": from_domain, "disposition": "none"}
        transaction.auth_results.append(f"dmarc=temperror header.from={from_domain}")
        return DECLINED

    def _evaluate(self, found: tuple[str, dict[str, str]] | None, transaction: Transaction,
                  from_domain: str) -> HookAnswer:
        if found is None:
            transaction.notes["dmarc"] = {"result": "none", "domain": from_domain, "disposition": "none"}
            transaction.auth_results.append(f"dmarc=none header.from={from_domain}")
            self.log(LOGINFO, f"none, {from_domain} publishes no policy")
            return DECLINED
        where, tags = found
        policy = tags.get("p", "none").lower()
        if where != from_domain and "sp" in tags:
            policy = tags["sp"].lower()
        if policy not in ("none", "quarantine", "reject"):
            policy = "none"
        spf = transaction.notes.get("spf") or {}
        spf_ok = spf.get("result") == "pass" and spf.get("scope") == "mailfrom" and \
            aligned(spf.get("domain", ""), from_domain, tags.get("aspf", "r").lower())
        dkim_ok = any(info.get("result") == "pass" and
                      aligned(info.get("domain", ""), from_domain, tags.get("adkim", "r").lower())
                      for info in transaction.notes.get("dkim") or ())
        passed = spf_ok or dkim_ok
        disposition = "none"
        if not passed and policy != "none":
            try:
                pct = min(100, max(0, int(tags.get("pct", "100"))))
            except ValueError:
                pct = 100
            disposition = policy if pct == 100 or random.randrange(100) < pct else "none"
        result = "pass" if passed else "fail"
        transaction.notes["dmarc"] = {"result": result, "domain": from_domain, "policy": policy,
                                      "disposition": disposition, "spf_aligned": spf_ok,
                                      "dkim_aligned": dkim_ok, "policy_domain": where, "record": tags}
        transaction.auth_results.append(
            f"dmarc={result} (p={policy} dis={disposition}) header.from={from_domain}")
        self.log(LOGINFO, f"{result}, {from_domain} p={policy} dis={disposition}")
        return DECLINED

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        info = transaction.notes.get("dmarc")
        if not info:
            return DECLINED
        if info["disposition"] == "quarantine":
            transaction.prepend_header("X-DMARC-Quarantine", "yes")
            return DECLINED
        if info["disposition"] != "reject":
            return DECLINED
        if info["result"] == "permerror":
            return self.get_reject(transaction, f"DMARC: message has {info['reason']} (RFC 7489 6.6.1)",
                                   default=DENY)
        return self.get_reject(transaction, f"failed DMARC policy of {info['domain']}", default=DENY)
