"""parse_addr_withhelo: strict RFC 821 for clients that said HELO.

A client that greeted with HELO (not EHLO) did not ask for ESMTP, so MAIL
and RCPT may not carry ESMTP parameters such as ``SIZE=`` or ``BODY=``:
``MAIL FROM:<a@example.org> SIZE=100`` after HELO gets ``501 Syntax error
in parameters``. EHLO clients are parsed as usual. No arguments.

config/plugins::

    parse_addr_withhelo
"""

from __future__ import annotations

import re

from qptwisted import DECLINED, LOGDEBUG, OK, HookAnswer, Plugin, Transaction

_BRACKETED = re.compile(r"\s*(<.*>)\s*(.*)\Z")


def parse_helo_path(line: str) -> tuple[str, dict[str, str | None]]:
    """The path of a MAIL/RCPT argument, refusing any parameter (ValueError)."""
    match = _BRACKETED.match(line)
    if match:
        if match.group(2).strip():
            raise ValueError("No parameters allowed in HELO")
        return match.group(1), {}
    line = line.strip()
    if re.search(r"\s", line):
        raise ValueError("No parameters allowed in HELO")
    return line, {}


class ParseAddrWithHelo(Plugin):
    """No ESMTP parameters after HELO."""

    name = "parse_addr_withhelo"
    strict_arguments = True

    def _parser(self, transaction: Transaction) -> HookAnswer:
        if transaction.connection.hello != "helo":
            return DECLINED
        self.log(LOGDEBUG, "HELO client: no ESMTP parameters")
        return OK, parse_helo_path

    def hook_mail_parse(self, transaction: Transaction) -> HookAnswer:
        return self._parser(transaction)

    def hook_rcpt_parse(self, transaction: Transaction) -> HookAnswer:
        return self._parser(transaction)
