"""virus/klez_filter: refuse the Klez worm by its signature, as qpsmtpd's ``virus/klez_filter``.

Klez mails are large: a message under 60,000 bytes is let through at once.
Otherwise the first 40 lines of the body are read; a ``Content-Type`` line
of an audio or application part followed by a line that starts with the
base64 of Klez's executable header (``TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQA``)
refuses the message after DATA with ``552 Klez Virus Detected``. No
arguments.

config/plugins::

    virus/klez_filter
"""

from __future__ import annotations

import re
from itertools import islice

from qptwisted import DECLINED, DENY, LOGINFO, HookAnswer, Plugin, Transaction

#: smaller messages are not Klez
MIN_SIZE = 60_000
#: how far into the body the signature may be
LINES = 40
_PART = re.compile(rb"^Content-type:.*(?:audio|application)", re.IGNORECASE)
_SIGNATURE = b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQA"


class KlezFilter(Plugin):
    """Refuse messages that carry the Klez worm's signature."""

    name = "virus/klez_filter"
    strict_arguments = True

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        if transaction.data_size < MIN_SIZE:
            return DECLINED
        seen_part = False
        with transaction.body_fh() as body:
            for line in islice(body, LINES + 1):
                if _PART.match(line):
                    seen_part = True
                elif seen_part and line.startswith(_SIGNATURE):
                    self.log(LOGINFO, "fail, Klez signature")
                    return DENY, "Klez Virus Detected"
        return DECLINED
