"""Policy groups: which group a recipient belongs to, and config files per group.

A postmaster who wants different checks for different recipients (no
greylisting for one customer, a smaller size limit for one domain) puts
recipients into groups. SMTP gives one answer per message after DATA, so a
transaction serves one group only: the first accepted recipient fixes it and
a recipient of another group is answered ``452 4.5.3``, which the sending
MTA retries in a transaction of its own (RFC 5321 4.5.3.1.10).

A recipient's group comes from a plugin answering the ``user_config`` hook
for the name ``policy_group``, else from ``config/policy_groups``: one
``PATTERN GROUP`` per line, the first match wins, where PATTERN is an
address (``bob@example.org``), a domain (``example.org`` or
``@example.org``, sub-domains not included), ``*`` for every recipient,
or ``/regex/`` matched against the whole address. A recipient no pattern
names has no group (None), which is a group of its own.

Per-group config: ``config/groups/<group>/<file>`` overrides ``config/<file>``
for the transactions of that group (:func:`group_config_list`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol
from weakref import WeakKeyDictionary

from qptwisted.core.config import Config, ConfigError

if TYPE_CHECKING:
    from qptwisted.mail.address import Address


class Engine(Protocol):
    """What policy groups need of the engine (which imports this module, so it is described here)."""

    config: Config

    def config_list(self, name: str) -> list[str]:
        """Config values of ``name``."""

    def hook_config(self, hook: str, *args: Any) -> list[str] | None:
        """Values a ``config``/``user_config`` plugin supplies."""

    @property
    def hooks(self) -> Any:
        """The hook runner."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
_tables: WeakKeyDictionary[Config, GroupTable] = WeakKeyDictionary()


def check_group_name(name: str) -> str:
    """``name`` if it can be a group (letters, digits, ``_ . -``; it names a directory), else ValueError."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"{name!r} is not a policy group name (letters, digits, _ . -)")
    return name


class GroupTable:
    """The patterns of ``config/policy_groups``, in order."""

    def __init__(self, lines: list[str], source: str = "policy_groups") -> None:
        self.addresses: dict[str, str] = {}
        self.rules: list[tuple[str, str | re.Pattern[str], str]] = []
        for line in lines:
            words = line.split()
            if len(words) != 2:
                raise ConfigError(f"config file {source}: {line!r}: expected PATTERN GROUP")
            pattern, group = words
            try:
                check_group_name(group)
            except ValueError as err:
                raise ConfigError(f"config file {source}: {err}") from None
            if len(pattern) > 2 and pattern[0] == pattern[-1] == "/":
                try:
                    self.rules.append(("regex", re.compile(pattern[1:-1], re.IGNORECASE), group))
                except re.error as err:
                    raise ConfigError(f"config file {source}: {pattern}: {err}") from None
            elif pattern == "*":
                self.rules.append(("any", "", group))
            elif "@" in pattern.lstrip("@"):
                self.rules.append(("address", pattern.lower(), group))
            else:
                self.rules.append(("domain", pattern.lstrip("@").lower(), group))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def group_of(self, address: Address) -> str | None:
        """The group of the first pattern that matches ``address``, or None."""
        canonical = address.canonical.lower()
        domain = address.host.lower()
        for kind, pattern, group in self.rules:
            if kind == "any":
                return group
            if kind == "address" and canonical == pattern:
                return group
            if kind == "domain" and domain == pattern:
                return group
            if kind == "regex" and isinstance(pattern, re.Pattern) and pattern.search(canonical):
                return group
        return None


def group_table(engine: Engine) -> GroupTable:
    """The engine's ``config/policy_groups``, parsed once per engine (a reload reads it again)."""
    table = _tables.get(engine.config)
    if table is None:
        table = _tables[engine.config] = GroupTable(engine.config_list("policy_groups"),
                                                    str(engine.config.path("policy_groups")))
    return table


def groups_in_use(engine: Engine) -> bool:
    """True when recipients can have groups: ``config/policy_groups`` or a ``user_config`` plugin."""
    return bool(group_table(engine)) or engine.hooks.has("user_config")


def group_of(engine: Engine, address: Address) -> str | None:
    """The policy group of recipient ``address``: a ``user_config`` plugin's, else the table's."""
    values = engine.hook_config("user_config", address, "policy_group")
    if values:
        return check_group_name(values[0])
    return group_table(engine).group_of(address)


def group_config_list(engine: Engine, group: str | None, name: str) -> list[str]:
    """Config file ``name`` for ``group``: ``config/groups/<group>/<name>`` if set, else ``config/<name>``.

    The ``config`` hook is asked for both names, so a plugin may supply either.
    """
    if group:
        values = engine.config_list(f"groups/{group}/{name}")
        if values:
            return values
    return engine.config_list(name)
