"""relay: decide which clients may relay.

Sets ``connection.relay_client`` when the client's IP is in
``config/relayclients`` or ``config/morerelayclients`` (addresses, CIDR
networks v4/v6, or octet prefixes such as ``192.168.``), or when the
``RELAYCLIENT`` environment variable is set; ``config/norelayclients``
overrides both. With the argument ``only``, non-relay clients are refused at
RCPT (a relay-only server).

config/plugins::

    relay
    relay only
"""

from __future__ import annotations

import os

from qptwisted import DECLINED, DENY, OK, Address, HookAnswer, Plugin, Transaction, arg
from qptwisted.lib.ipmatch import IPMatcher


class Relay(Plugin):
    """Mark trusted clients as relay clients."""

    name = "relay"
    only: bool = arg.flag("relay-only mode: refuse every recipient of a client that may not relay")

    def register(self, *args: str) -> None:
        """Read the client lists."""
        self.relay = IPMatcher(self.config_list("relayclients") + self.config_list("morerelayclients"))
        self.norelay = IPMatcher(self.config_list("norelayclients"))
        self.env = "RELAYCLIENT" in os.environ

    def is_relay_client(self, ip: str) -> bool:
        """True if ``ip`` may relay."""
        if self.norelay and self.norelay.matches(ip):
            return False
        return self.env or self.relay.matches(ip)

    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        if self.is_relay_client(connection.remote_ip):
            connection.relay_client = True
            self.log(7, f"{connection.remote_ip} is a relay client")
        return DECLINED

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: str) -> HookAnswer:
        if not self.only:
            return DECLINED
        if transaction.connection.relay_client:
            return OK
        return DENY, "Relaying denied (#5.7.1)"
