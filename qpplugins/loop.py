"""loop: refuse messages that have travelled too many hops.

Counts ``Received`` and ``Delivered-To`` headers (ours included) after DATA;
at ``max_hops`` or more the message is refused with ``552 Too many hops.
This message is looping.`` (5.4.6).

Argument: the maximum (default 100, the minimum RFC 5321 6.3 allows), also
written ``max_hops N``.

config/plugins::

    loop 100
"""

from __future__ import annotations

from qptwisted import DECLINED, DENY, LOGINFO, HookAnswer, Plugin, Transaction, arg


class Loop(Plugin):
    """Refuse messages with too many Received/Delivered-To headers."""

    name = "loop"
    max_hops: int = arg.int(100, "Received and Delivered-To headers at which a message is refused",
                            positional=True)

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        header = transaction.header
        hops = len(header.get_all("Received", [])) + len(header.get_all("Delivered-To", []))
        if hops >= self.max_hops:
            self.log(LOGINFO, f"fail, {hops} hops")
            return DENY, "Too many hops.  This message is looping. (#5.4.6)"
        return DECLINED
