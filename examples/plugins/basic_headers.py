# Seed 002 (OSCON 2007 lightning talk), "Check basic headers": 11 lines of Perl.
"""basic_headers: refuse empty messages and messages without the headers every message needs.

After DATA, a message with no data at all is refused with ``552 You have to
send some data first``, and one that lacks a required header with ``552
Mail with no From header not accepted here``. (The stock ``headers`` plugin
also checks that the Date is within a few days of now.)

Argument: ``require H,H...``, the headers a message must have (default
``From,Date``).

config/plugins::

    basic_headers require From,Date,Subject
"""

from qptwisted import DECLINED, DENY, HookAnswer, Plugin, Transaction, arg


class BasicHeaders(Plugin):
    """Refuse messages without data or without required headers."""

    name = "basic_headers"
    require = arg.list(["From", "Date"], "the headers every message must have")

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        if transaction.data_size == 0:
            return DENY, "You have to send some data first"
        for header in self.require:
            if not transaction.header.get(header):
                return DENY, f"Mail with no {header} header not accepted here"
        return DECLINED
