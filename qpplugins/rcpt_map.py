"""rcpt_map: answer the recipients of one domain from a map file.

Arguments: ``domain DOMAIN file FILE [default CODE=MESSAGE]``. The map
file has one line per address: ``ADDRESS CODE [message]``, where ``ADDRESS``
is ``user@DOMAIN`` (or just ``user``) and ``CODE`` a qpsmtpd constant
(``OK``, ``DENY``, ``DENYSOFT`` ...). Recipients of ``DOMAIN`` not in the
map get the default, ``DENY`` ``No such user.`` unless ``default`` says
otherwise (underscores in its message are spaces). Other domains are left to
the rest of the chain. The file is read again at the next connection after it
changes.

A relative ``FILE`` is taken in the config directory. Better than qpsmtpd:
lines may give the local part alone, and the map is checked by its
modification time without reading it on every connection.

config/plugins::

    rcpt_map domain example.org file rcpt_map.example.org default DENY=No_such_user_here
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qptwisted import (
    DECLINED,
    DENY,
    LOGERROR,
    LOGINFO,
    Address,
    ArgumentError,
    Code,
    HookAnswer,
    Transaction,
    arg,
)
from qptwisted.lib.policy import PolicyPlugin, return_code


class RcptMap(PolicyPlugin):
    """Per-address answers for one domain."""

    name = "rcpt_map"
    domain: str = arg.str(help="the domain whose recipients the map answers")
    file: Path = arg.path(help="the map file (relative: in the config directory)")
    default: str | None = arg.str(None, "CODE=MESSAGE for recipients not in the map (default "
                                  "DENY=No_such_user.; underscores are spaces)")

    def register(self, *args: str) -> None:
        """Read the map."""
        self.domain = self.domain.lower()
        self.path = str(self.file)
        self.answer: tuple[Code, str] = (DENY, "No such user.")
        if self.default is not None:
            name, _, message = self.default.partition("=")
            code = return_code(name)
            if code is None:
                raise ArgumentError(f"plugin {self.plugin_name}: argument default: {name!r} is not a "
                                    "qpsmtpd constant (OK, DENY, DENYSOFT ...)")
            self.answer = (code, message.replace("_", " ") or "No such user.")
        self.map: dict[str, tuple[Code, str | None]] = {}
        self.mtime = -1.0
        self.read_map()
        if not self.map:
            raise ValueError(f"rcpt_map: empty map file {self.path}")

    def read_map(self) -> None:
        """Read the map file if it changed since the last read."""
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as err:
            if self.mtime < 0:
                raise ValueError(f"rcpt_map: cannot read {self.path}: {err}") from err
            return
        if mtime == self.mtime:
            return
        entries: dict[str, tuple[Code, str | None]] = {}
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                parts = line.strip().split(None, 2)
                if not parts or parts[0].startswith("#"):
                    continue
                code = return_code(parts[1]) if len(parts) > 1 else None
                if code is None:
                    self.log(LOGERROR, f"{self.path} line {number}: no valid constant")
                    continue
                address = parts[0].lower()
                if "@" not in address:
                    address = f"{address}@{self.domain}"
                entries[address] = (code, parts[2] if len(parts) > 2 else None)
        self.map, self.mtime = entries, mtime
        self.log(LOGINFO, f"read {len(entries)} entries from {self.path}")

    def hook_pre_connection(self, transaction: Transaction, **kwargs: Any) -> HookAnswer:
        self.read_map()
        return DECLINED

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: str) -> HookAnswer:
        if not rcpt.host or not rcpt.user or rcpt.host.lower() != self.domain:
            return DECLINED
        return self.map.get(rcpt.canonical.lower(), self.answer)
