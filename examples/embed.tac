"""A Twisted application with an SMTP listener: qptwisted embedded in a few lines.

Run it with ``twistd -ny examples/embed.tac``. Environment variables (all optional):

- ``QPSMTPD_CONFIG``: the config directory (default ``./config``, else the sample config)
- ``QPSMTPD_LISTEN``: the listener, a Twisted endpoint string
  (default ``tcp:2525:interface=127.0.0.1``)

Anything else the application does (a web site, other services) goes next to it
under the same ``application``; ``kill -HUP`` reloads the SMTP configuration.
"""

import os

from twisted.application import service

from qptwisted import QPSMTPDService

application = service.Application("qpsmtpd-embedded")

mx = QPSMTPDService(os.environ.get("QPSMTPD_CONFIG"))
listener = mx.listen(os.environ.get("QPSMTPD_LISTEN", "tcp:2525:interface=127.0.0.1"))
mx.setServiceParent(application)
