"""hosts_allow: decide at ``pre-connection`` who may connect at all.

Two checks, before anything else runs for the client:

1. A per-IP limit of concurrent connections: with ``max_conn_ip N`` (an
   argument, the ``max_conn_ip`` config file, or the ``max_conn_ip`` keyword
   a server passes to ``pre-connection``), the ``N+1``-th concurrent
   connection from one IP gets ``451 Sorry, too many connections from IP,
   try again later``.
2. ``config/hosts_allow`` rules, one per line: ``ip[/mask] CODE [message]``,
   first match wins, e.g. ``192.0.2.0/24 DENY go away`` or ``2001:db8::/32
   DENYSOFT later please`` or ``10.0.0.1 OK``. ``CODE`` is a qpsmtpd constant
   (an unknown one means DECLINED).

Better than qpsmtpd: IPv6 clients and rules work (qpsmtpd did IPv4 bit
arithmetic only), and the limit works in every server mode since the
engine counts connections itself.

config/plugins::

    hosts_allow max_conn_ip 5
"""

from __future__ import annotations

import ipaddress
from typing import Any

from qptwisted import DECLINED, DENYSOFT, LOGERROR, LOGINFO, Code, ConfigError, HookAnswer, Transaction, arg
from qptwisted.lib.ipmatch import IPMatcher
from qptwisted.lib.policy import PolicyPlugin, return_code


class HostsAllow(PolicyPlugin):
    """Per-IP connection limit and IP rules at pre-connection."""

    name = "hosts_allow"
    max_conn_ip: int | None = arg.int(None, "concurrent connections one IP may have (default: config "
                                      "max_conn_ip, else no limit)")

    def register(self, *args: str) -> None:
        """Read the limit and the rules."""
        if not self.max_conn_ip:
            limit = self.config("max_conn_ip") or "0"
            try:
                self.max_conn_ip = int(limit)
            except ValueError:
                raise ConfigError(f"{self.plugin_name}: config max_conn_ip: {limit!r} is not a number") \
                    from None
        self.rules: list[tuple[IPMatcher, Code, str | None]] = []
        for line in self.config_list("hosts_allow"):
            parts = line.strip().split(None, 2)
            if len(parts) < 2:
                continue
            try:
                matcher = IPMatcher([parts[0]])
            except ValueError as err:
                self.log(LOGERROR, f"hosts_allow: {err}")
                continue
            code = return_code(parts[1]) or DECLINED
            self.rules.append((matcher, code, parts[2] if len(parts) > 2 else None))

    def hook_pre_connection(self, transaction: Transaction, remote_ip: str = "", connections_from_ip: int = 1,
                            max_conn_ip: int | None = None, **kwargs: Any) -> HookAnswer:
        limit = max_conn_ip if max_conn_ip else self.max_conn_ip
        if limit and connections_from_ip > limit:
            self.log(LOGINFO, f"Too many connections from {remote_ip}: {connections_from_ip} > {limit}. "
                     "Denying connection.")
            return DENYSOFT, f"Sorry, too many connections from {remote_ip}, try again later"
        try:
            ipaddress.ip_address(remote_ip.split("%", 1)[0])
        except ValueError:
            return DECLINED
        for matcher, code, message in self.rules:
            if matcher.matches(remote_ip):
                self.log(LOGINFO, f"{remote_ip} matched a rule: {code.name}")
                return code, message
        self.log(LOGINFO, "pass")
        return DECLINED
