"""qpsmtpd's old plugin names and argument spellings, and what they load today: the one alias table.

A ``config/plugins`` line written for qpsmtpd may name a plugin by a name
qpsmtpd itself has since dropped (Debian's ``check_*`` shims of 0.94, the
renames of 0.9x such as ``require_resolvable_fromhost``), by qpsmtpd's name
where qptwisted spells it differently (``auth/auth_flat_file``), or with
arguments a plugin no longer takes (``spamassassin reject_threshold 20``).
:data:`ALIASES` maps each such name to the plugin that loads now and, where
the words of the line changed, a function that rewrites them.

The loader consults the table after the directories of ``config/plugin_dirs``
(a postmaster's own file of the old name still wins) and before the stock
plugins; the engine logs every use once when it loads, as deprecated, with the
new spelling; ``qpsmtpd migrate DIR`` prints the same for a whole config
directory; docs/compatibility.md has the table for people.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Rewrite:
    """The words of a line after translation, and one sentence per change made to them."""

    words: tuple[str, ...]
    changes: tuple[str, ...] = ()


#: a function from the words of an old line to the words the new plugin takes
Rewriter = Callable[[Sequence[str]], Rewrite]


@dataclass(frozen=True)
class Alias:
    """One old spelling: the plugin it loads now, and how its arguments are rewritten."""

    old: str
    new: str
    #: where the old spelling comes from (for the log and the docs)
    origin: str
    #: rewrites the words of the line; ``None`` passes them on unchanged
    rewrite: Rewriter | None = None
    #: what behaves differently beyond the words (config files, defaults), for ``qpsmtpd migrate``
    note: str = ""

    @property
    def renamed(self) -> bool:
        """True when the old spelling names another plugin (not only other arguments)."""
        return self.old != self.new

    def translate(self, words: Sequence[str]) -> Rewrite:
        """The words the new plugin takes."""
        return self.rewrite(words) if self.rewrite is not None else Rewrite(tuple(words))


# -- the rewriters -------------------------------------------------------------
def _pairs(words: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """qpsmtpd's ``%args`` reading of a line: key value key value ...; a last odd word has no value."""
    for index in range(0, len(words), 2):
        yield words[index], words[index + 1] if index + 1 < len(words) else None


def _keys(words: Sequence[str]) -> set[str]:
    return {key.lower().replace("-", "_") for key, _ in _pairs(words)}


#: the parameters qpsmtpd 0.94's greylisting takes that qptwisted's does as well
_GREYLIST_KEYS = frozenset({
    "remote_ip", "sender", "recipient", "per_recipient", "black_timeout", "grey_timeout",
    "white_timeout", "deny_late", "db_dir", "p0f", "geoip", "reject", "reject_type", "loglevel",
    "redis", "fail_open",
})
#: qpsmtpd 0.94 greylisting parameters with no meaning here, and why
_GREYLIST_GONE = {
    "per_recipient_db": "per-recipient databases are gone: one store serves every recipient",
    "nfslock": "the SQLite or Redis store needs no NFS lock",
    "upgrade": "there is no old database format to convert",
}


def _greylist(words: Sequence[str], *, keep_unknown: bool) -> Rewrite:
    out: list[str] = []
    changes: list[str] = []
    given = _keys(words)
    for key, value in _pairs(words):
        name = key.lower().replace("-", "_")
        if value is None:
            changes.append(f"dropped {key!r}: a parameter without a value (qpsmtpd ignored it too)")
        elif name == "mode":
            if value.lower() in ("testonly", "off") and "reject" not in given:
                out += ["reject", "0"]
                changes.append(f"'mode {value}' is now 'reject 0' (log, never refuse)")
            else:
                changes.append(f"dropped 'mode {value}' (refusing is the default; 'reject 0' only logs)")
        elif name in _GREYLIST_GONE:
            changes.append(f"dropped '{key} {value}': {_GREYLIST_GONE[name]}")
        elif name in _GREYLIST_KEYS or keep_unknown:
            out += [key, value]
        else:
            changes.append(f"dropped '{key} {value}': not a greylisting parameter (qpsmtpd logged "
                           "'invalid parameter' and ignored it too)")
    return Rewrite(tuple(out), tuple(changes))


def _denysoft_greylist(words: Sequence[str]) -> Rewrite:
    """``denysoft_greylist`` was greylisting's first name; qpsmtpd ignored parameters it did not know."""
    return _greylist(words, keep_unknown=False)


def _greylisting(words: Sequence[str]) -> Rewrite:
    """qpsmtpd 0.94's greylisting parameters that are spelt differently (or gone) here."""
    return _greylist(words, keep_unknown=True)


def _basicheaders(words: Sequence[str]) -> Rewrite:
    """``check_basicheaders N`` (or ``days N``): N days in the past and in the future."""
    if len(words) == 1 and words[0].isdigit():
        days = words[0]
        return Rewrite(("past", days, "future", days),
                       (f"'{days}' (days) is now 'past {days} future {days}'",))
    out: list[str] = []
    changes: list[str] = []
    given = _keys(words)
    for key, value in _pairs(words):
        if key.lower() == "days" and value is not None:
            spread = [side for side in ("past", "future") if side not in given]
            for side in spread:
                out += [side, value]
            changes.append(f"'days {value}' is now '{' '.join(f'{s} {value}' for s in spread) or 'dropped'}'")
        else:
            out += [key] if value is None else [key, value]
    return Rewrite(tuple(out), tuple(changes))


def _relay_only(words: Sequence[str]) -> Rewrite:
    """``relay_only`` is the ``only`` switch of ``relay``."""
    if "only" in words:
        return Rewrite(tuple(words))
    return Rewrite((*words, "only"), ("relay_only is 'relay only'",))


def _renamed_pairs(table: dict[str, tuple[str, Callable[[str], str | None]]]) -> Rewriter:
    """A rewriter for a ``key value ...`` plugin whose keys in ``table`` became other keys.

    ``table`` maps an old key to ``(new key, value mapping)``; a mapping that
    returns ``None`` drops the pair. A new key that the line gives as well wins.
    """

    def rewrite(words: Sequence[str]) -> Rewrite:
        out: list[str] = []
        changes: list[str] = []
        given = _keys(words)
        for key, value in _pairs(words):
            entry = table.get(key.lower())
            if entry is None or value is None:
                out += [key] if value is None else [key, value]
                continue
            new_key, mapping = entry
            new_value = mapping(value)
            if new_value is None or new_key in given:
                changes.append(f"dropped '{key} {value}'")
            else:
                out += [new_key, new_value]
                changes.append(f"'{key} {value}' is now '{new_key} {new_value}'")
        return Rewrite(tuple(out), tuple(changes))

    return rewrite


#: qpsmtpd's ``spf_deny 1|2`` became ``reject 3|4`` (UPGRADING: "spf_deny setting deprecated")
_SPF_DENY = {"1": "3", "2": "4"}

_ENTRIES = (
    # Debian's qpsmtpd 0.94 keeps these old names as shims that load the renamed plugin
    Alias("check_badmailfrom", "badmailfrom", "Debian's 0.94 shim; renamed in qpsmtpd 0.92"),
    Alias("check_badrcptto", "badrcptto", "Debian's 0.94 shim; renamed in qpsmtpd 0.92"),
    Alias("check_earlytalker", "earlytalker", "Debian's 0.94 shim; renamed in qpsmtpd 0.92"),
    Alias("check_loop", "loop", "Debian's 0.94 shim; renamed in qpsmtpd 0.92"),
    Alias("check_relay", "relay", "Debian's 0.94 shim; merged into relay in qpsmtpd 0.92"),
    Alias("check_spamhelo", "helo", "Debian's 0.94 shim; merged into helo in qpsmtpd 0.92",
          note="helo (policy lenient) also refuses 'localhost' from a remote client and an address "
               "literal that is not the client's, besides the names in config/badhelo"),
    # renamed or merged by qpsmtpd 0.92-0.94 (plugins/registry.txt lists them as aliases)
    Alias("check_badmailfrom_patterns", "badmailfrom", "merged into badmailfrom in qpsmtpd 0.92",
          note="config/badmailfrom_patterns is not read: put its patterns into config/badmailfrom"),
    Alias("check_badrcptto_patterns", "badrcptto", "merged into badrcptto in qpsmtpd 0.92",
          note="config/badrcptto_patterns is not read: put its patterns into config/badrcptto"),
    Alias("check_badmailfromto", "badmailfromto", "renamed in qpsmtpd 0.92"),
    Alias("check_basicheaders", "headers", "rewritten as headers in qpsmtpd 0.92", _basicheaders),
    Alias("check_bogus_bounce", "bogus_bounce", "renamed in qpsmtpd 0.92",
          note="bogus_bounce refuses by default (reject 1); qpsmtpd's only logged unless given "
               "'reject 1': write 'bogus_bounce reject 0' to keep logging only"),
    Alias("check_norelay", "relay", "merged into relay in qpsmtpd 0.92 (config/norelayclients)"),
    Alias("relay_only", "relay", "merged into relay in qpsmtpd 0.92", _relay_only),
    Alias("require_resolvable_fromhost", "resolvable_fromhost", "renamed in qpsmtpd 0.92"),
    Alias("denysoft_greylist", "greylisting", "greylisting's first name (qpsmtpd 0.29)",
          _denysoft_greylist),
    # qpsmtpd's names of plugins qptwisted spells without the repeated category
    Alias("auth/auth_checkpassword", "auth/checkpassword", "qpsmtpd's name"),
    Alias("auth/auth_flat_file", "auth/flat_file", "qpsmtpd's name"),
    Alias("auth/auth_imap", "auth/imap", "qpsmtpd's name"),
    # old argument spellings of plugins that kept their name
    Alias("greylisting", "greylisting", "qpsmtpd 0.94's greylisting parameters", _greylisting),
    Alias("sender_permitted_from", "sender_permitted_from", "'spf_deny' was dropped in qpsmtpd 0.92",
          _renamed_pairs({"spf_deny": ("reject", _SPF_DENY.get)})),
    Alias("spamassassin", "spamassassin", "'reject_threshold' became 'reject' in qpsmtpd 0.92",
          _renamed_pairs({"reject_threshold": ("reject", lambda value: value)})),
)

#: every old spelling by the name a ``config/plugins`` line gives
ALIASES: dict[str, Alias] = {alias.old: alias for alias in _ENTRIES}


def lookup(name: str) -> Alias | None:
    """The alias entry of plugin ``name`` (without a ``:N`` instance suffix), if it has one."""
    return ALIASES.get(name)


__all__ = ["ALIASES", "Alias", "Rewrite", "Rewriter", "lookup"]
