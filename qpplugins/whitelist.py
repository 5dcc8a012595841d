"""whitelist: mark trusted hosts, HELO names, senders and recipients.

Nothing is refused or accepted here; other plugins read the notes (the
policy helper ``is_immune`` skips whitelisted hosts and senders):

- ``config/whitelisthosts``: IPs, CIDR networks (IPv4 and IPv6) or octet
  prefixes such as ``192.168.`` -> connection note ``whitelisthost``; the
  ``WHITELISTCLIENT`` environment variable does the same for every client.
- ``config/whitelisthelo``: HELO/EHLO names -> connection notes
  ``whitelisthelo`` and ``whitelisthost``.
- ``config/whitelistsenders``: addresses or domains (``user@example.org``,
  ``example.org``) -> transaction note ``whitelistsender``.
- ``config/whitelistrcpt``: addresses or domains -> transaction note
  ``whitelistrcpt`` and the recipient's note ``whitelistrcpt``.

Better than qpsmtpd: host entries are real CIDR networks, IPv6 included
(qpsmtpd only matched string prefixes).

config/plugins::

    whitelist
"""

from __future__ import annotations

import os

from qptwisted import DECLINED, LOGINFO, Address, HookAnswer, Transaction
from qptwisted.lib.ipmatch import IPMatcher
from qptwisted.lib.policy import PolicyPlugin


class Whitelist(PolicyPlugin):
    """Set whitelist notes from the whitelist config files."""

    name = "whitelist"

    def register(self, *args: str) -> None:
        """Read the four lists once (a reload rebuilds the engine)."""
        self.hosts = IPMatcher(self.config_list("whitelisthosts"))
        self.helos = self._entries("whitelisthelo")
        self.senders = self._entries("whitelistsenders")
        self.rcpts = self._entries("whitelistrcpt")

    def _entries(self, name: str) -> set[str]:
        return {line.split()[0].lower() for line in self.config_list(name) if line.split()}

    @staticmethod
    def _listed(address: Address, entries: set[str]) -> bool:
        return bool(entries) and (address.canonical.lower() in entries or address.host.lower() in entries)

    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        if "WHITELISTCLIENT" in os.environ:
            connection.notes["whitelistclient"] = connection.notes["whitelisthost"] = True
            self.log(LOGINFO, f"pass, {connection.remote_ip} whitelisted by the environment")
        elif self.hosts and self.hosts.matches(connection.remote_ip):
            connection.notes["whitelisthost"] = True
            self.log(LOGINFO, f"pass, host {connection.remote_ip} in whitelisthosts")
        return DECLINED

    def hook_helo(self, transaction: Transaction, host: str, *args: str) -> HookAnswer:
        if host.lower() in self.helos:
            notes = transaction.connection.notes
            notes["whitelisthelo"] = notes["whitelisthost"] = True
            self.log(LOGINFO, f"pass, helo {host} in whitelisthelo")
        return DECLINED

    hook_ehlo = hook_helo

    def hook_mail(self, transaction: Transaction, sender: Address, **params: str) -> HookAnswer:
        if not sender.is_null and self._listed(sender, self.senders):
            transaction.notes["whitelistsender"] = True
            self.log(LOGINFO, f"pass, sender {sender} in whitelistsenders")
        return DECLINED

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: str) -> HookAnswer:
        if self._listed(rcpt, self.rcpts):
            transaction.notes["whitelistrcpt"] = True
            rcpt.notes["whitelistrcpt"] = True
            self.log(LOGINFO, f"pass, recipient {rcpt} in whitelistrcpt")
        return DECLINED
