"""queue/smtp-forward: relay accepted mail through a downstream SMTP server.

Arguments: ``HOST[:PORT] [PORT] [option=value ...]`` (an IPv6 address is
written ``[::1]:2525``; the qpsmtpd form ``HOST PORT`` works too). Options:

* ``starttls=try|require|no`` (default ``try``): use STARTTLS when offered;
  ``require`` refuses to send in clear (452 if the downstream lacks it).
* ``verify=yes`` checks the downstream's certificate against ``cafile=PATH``
  (relative: in the config directory; default: the system's trust store) and
  ``tls_name=NAME`` (default ``HOST``).
* ``xclient`` sends Postfix XCLIENT so the downstream sees the real client
  (then every message gets its own connection); ``xforward`` sends XFORWARD.
* ``reuse=N`` keeps up to N idle connections for the next messages
  (default 2, 0 disables) for ``idle=S`` seconds (default 10).
* ``connect_timeout=S`` (30), ``timeout=S`` per command (300),
  ``data_timeout=S`` for the reply after the message (600), ``helo=NAME``
  (default ``config/me``). All timers run on the engine clock. Options may
  also be written ``name value``; times accept ``90s``, ``5m``.

MAIL and every RCPT are pipelined when the downstream offers PIPELINING.
The client gets ``250 Queued! <downstream reply>`` only after the downstream
said 250 to the message. Per-recipient rule: every recipient must be
accepted; if the downstream refuses one at RCPT the message is not sent and
the client gets 552 (every refusal permanent) or 452 (any temporary),
naming the refused recipients. A downstream that is down, slow, or drops the
connection (also mid-DATA) gives 452. The per-recipient replies are kept in
the transaction note ``queue/smtp-forward_results``; the downstream queue id
in ``queue_id``.

ESMTP (``docs/esmtp.md``): the message goes with BDAT when the downstream
offers CHUNKING, the DSN parameters (RET, ENVID, NOTIFY, ORCPT) when it
offers DSN; a REQUIRETLS message only over TLS (else 452 4.7.10), a
BINARYMIME one only to a downstream offering it (else 554 5.6.3).

config/plugins::

    queue/smtp-forward 127.0.0.1:10025 xforward
    queue/smtp-forward smtp.example.org:587 starttls=require verify=yes
"""

from __future__ import annotations

from qpplugins.queue._relay import RelayQueue


class SMTPForward(RelayQueue):
    """Relay through a downstream SMTP server."""

    name = "queue/smtp-forward"
    lmtp = False
    default_port = 25
