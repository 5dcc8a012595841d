"""rcpt_regexp: answer recipients by regular expression or exact address.

Each line of ``config/rcpt_regexp`` is ``MATCH CODE [message]``:

- ``MATCH`` in slashes (``/^(test|foo)@example\\.(com|net)$/``) is a
  case-insensitive regular expression; anything else is compared with the
  lower-cased recipient address;
- ``CODE`` is a qpsmtpd constant: ``OK``, ``DENY``, ``DENYSOFT``,
  ``DENY_DISCONNECT``, ``DENYSOFT_DISCONNECT``, ``DECLINED``;
- the message (surrounding quotes are removed) is the reply text.

The first matching line answers. Lines with a bad pattern or code are
logged and skipped, as in qpsmtpd.

config/plugins::

    rcpt_regexp
"""

from __future__ import annotations

import re

from qptwisted import DECLINED, LOGDEBUG, LOGERROR, Address, Code, HookAnswer, Transaction
from qptwisted.lib.policy import PolicyPlugin, return_code


class RcptRegexp(PolicyPlugin):
    """Map recipients to answers with ``config/rcpt_regexp``."""

    name = "rcpt_regexp"

    def register(self, *args: str) -> None:
        """Read and compile the rules."""
        self.rules: list[tuple[str | re.Pattern[str], Code, str | None]] = []
        for line in self.config_list("rcpt_regexp"):
            parts = line.strip().split(None, 2)
            if len(parts) < 2:
                self.log(LOGERROR, f"rcpt_regexp - no return code in {line!r}")
                continue
            match, code_name = parts[0], parts[1]
            code = return_code(code_name)
            if code is None:
                self.log(LOGERROR, f"rcpt_regexp - {code_name} is not a valid constant")
                continue
            message = parts[2].strip().strip('"') if len(parts) > 2 else None
            rule: str | re.Pattern[str]
            if len(match) > 1 and match[0] == "/" and match[-1] == "/":
                try:
                    rule = re.compile(match[1:-1], re.IGNORECASE)
                except re.error as err:
                    self.log(LOGERROR, f"rcpt_regexp - bad pattern {match}: {err}")
                    continue
            else:
                rule = match.lower()
            self.rules.append((rule, code, message))

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: str) -> HookAnswer:
        if not rcpt.host or not rcpt.user:
            return DECLINED
        address = f"{rcpt.user}@{rcpt.host}".lower()
        for rule, code, message in self.rules:
            if rule == address if isinstance(rule, str) else rule.search(address):
                self.log(LOGDEBUG, f"{rule if isinstance(rule, str) else rule.pattern} matched {address}, "
                         f"returning {code.name}")
                return code, message
        return DECLINED
