"""queue/lmtp: deliver accepted mail over LMTP (RFC 2033), e.g. to Dovecot.

Arguments: ``HOST:PORT`` or ``/path/to/socket`` (a UNIX socket), then
options as for ``queue/smtp-forward``: ``starttls=no|try|require``
(default ``no``), ``verify=yes``, ``cafile=PATH``, ``tls_name=NAME``,
``reuse=N`` (default 2), ``idle=S``, ``connect_timeout=S``, ``timeout=S``,
``data_timeout=S``, ``helo=NAME``. The default port is 24.

Per-recipient rule. LMTP answers once per recipient after the message, and a
recipient that got 250 has its copy. The client gets ``250`` only if every
recipient was delivered. A recipient refused at RCPT stops the transaction
before the message is sent (nothing delivered, nothing duplicated). A
recipient that fails after the message (quota, mailbox locked) while others
succeeded still makes the answer a refusal, so that recipient is not
silently lost: 452 if any failure was temporary (the client retries and the
recipients already delivered get a duplicate, which the log line names), 552
if every failure was permanent (the client bounces for all). Connection
failures and timeouts are 452. Per-recipient replies are kept in the note
``queue/lmtp_results``. BDAT, DSN, REQUIRETLS and BINARYMIME as for
``queue/smtp-forward`` (``docs/esmtp.md``); Dovecot's LMTP offers CHUNKING.

config/plugins::

    queue/lmtp 127.0.0.1:24
    queue/lmtp /var/run/dovecot/lmtp
"""

from __future__ import annotations

from qpplugins.queue._relay import RelayQueue
from qptwisted import arg


class LMTPQueue(RelayQueue):
    """Deliver over LMTP with a reply per recipient."""

    name = "queue/lmtp"
    lmtp = True
    default_port = 24
    starttls: str = arg.choice(("no", "try", "require"), "no", "use STARTTLS when offered (try), insist "
                               "on it (require), or never (no; LMTP is usually local)")
