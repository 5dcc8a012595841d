"""rcpt_ok: the standard recipient gate.

Accepts a recipient when the client may relay (``relay_client``, or a
whitelisted host or sender), when its domain is ``me`` or listed in
``config/rcpthosts`` (an entry ``.example.com`` matches every sub-domain),
and for the bare ``<postmaster>``. Everything else: ``550 Relaying denied``.
No arguments.

config/plugins::

    rcpt_ok
"""

from __future__ import annotations

from qptwisted import DENY, OK, Address, HookAnswer, Plugin, Transaction


class RcptOk(Plugin):
    """Accept mail for our own domains only."""

    name = "rcpt_ok"
    strict_arguments = True

    def register(self, *args: str) -> None:
        """Read ``me`` and ``rcpthosts`` once per (re)load."""
        hosts = {host.lower() for host in self.config_list("rcpthosts")}
        hosts.add(self.engine.settings.me.lower())
        self.hosts = frozenset(h for h in hosts if not h.startswith("."))
        self.suffixes = tuple(h for h in hosts if h.startswith("."))

    def is_local(self, host: str) -> bool:
        """True if ``host`` is one of our domains."""
        host = host.lower().rstrip(".")
        return host in self.hosts or (bool(self.suffixes) and host.endswith(self.suffixes))

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: str) -> HookAnswer:
        connection = transaction.connection
        if connection.relay_client or connection.notes.get("whitelisthost") \
                or transaction.notes.get("whitelistsender"):
            return OK
        if not rcpt.host:  # the bare <postmaster> of RFC 5321 4.1.1.3
            return OK
        if self.is_local(rcpt.host):
            return OK
        return DENY, "Relaying denied (#5.7.1)"
