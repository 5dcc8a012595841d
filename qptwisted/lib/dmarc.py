"""DMARC (RFC 7489) pieces shared by plugins: organizational domains, records, alignment.

``organizational_domain`` uses the Public Suffix List (the ``publicsuffixlist``
package); ``find_policy_record`` looks a record up through the engine's
resolver, at the domain and then at its organizational domain.
"""

from __future__ import annotations

from typing import Any

from publicsuffixlist import PublicSuffixList
from twisted.internet.defer import Deferred

_psl: PublicSuffixList | None = None


def organizational_domain(domain: str) -> str:
    """The registrable ("organizational") domain of ``domain`` (RFC 7489 3.2)."""
    global _psl
    if _psl is None:
        _psl = PublicSuffixList()
    domain = domain.lower().rstrip(".")
    return _psl.privatesuffix(domain) or domain


def parse_record(text: str) -> dict[str, str] | None:
    """The tags of a DMARC record, or None if it is not one (``v=DMARC1`` first)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    if not text.strip().lower().startswith("v=dmarc1") or tags.get("v", "").upper() != "DMARC1":
        return None
    return tags


def find_policy_record(resolver: Any, domain: str,
                       timeout: float | None = None) -> Deferred[tuple[str, dict[str, str]] | None]:
    """``(domain where found, tags)`` of the DMARC record that governs ``domain``, or None.

    ``timeout``: seconds per lookup (``None``: the resolver's own).
    """
    domain = domain.lower().rstrip(".")
    org = organizational_domain(domain)

    def pick(texts: list[str]) -> dict[str, str] | None:
        records = [r for r in (parse_record(t) for t in texts) if r is not None]
        return records[0] if len(records) == 1 else None

    def at_domain(texts: list[str]) -> Any:
        found = pick(texts)
        if found is not None:
            return domain, found
        if org == domain:
            return None
        return resolver.lookup_txt(f"_dmarc.{org}", timeout).addCallback(
            lambda more: (org, pick(more)) if pick(more) is not None else None)

    result: Deferred[Any] = resolver.lookup_txt(f"_dmarc.{domain}", timeout).addCallback(at_domain)
    return result


def aligned(one: str, other: str, mode: str) -> bool:
    """Identifier alignment: strict (``s``) means equal, relaxed means same organizational domain."""
    one, other = one.lower().rstrip("."), other.lower().rstrip(".")
    if mode == "s":
        return one == other
    return organizational_domain(one) == organizational_domain(other)
