"""A minimal ``twisted.mail.smtp`` ESMTP sink: accepts mail for one domain, keeps nothing.

    python twisted_mail_sink.py PORT DOMAIN
"""

from __future__ import annotations

import sys

from twisted.internet import defer, endpoints, reactor
from twisted.mail import smtp
from twisted.mail.interfaces import IMessageDelivery, IMessageSMTP
from zope.interface import implementer


@implementer(IMessageSMTP)
class Discard:
    def lineReceived(self, line: bytes) -> None:
        pass

    def eomReceived(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(IMessageDelivery)
class Delivery:
    def __init__(self, domain: bytes) -> None:
        self.domain = domain

    def receivedHeader(self, helo, origin, recipients) -> bytes:  # the default one raises TypeError
        return b"Received: from bench by bench.test"

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        if user.dest.domain.lower() != self.domain:
            raise smtp.SMTPBadRcpt(user)
        return Discard


class Factory(smtp.SMTPFactory):
    protocol = smtp.ESMTP

    def __init__(self, domain: bytes) -> None:
        super().__init__()
        self.delivery = Delivery(domain)

    def buildProtocol(self, addr):
        p = super().buildProtocol(addr)
        p.delivery = self.delivery
        p.host = b"bench.test"
        return p


if __name__ == "__main__":
    port, domain = int(sys.argv[1]), sys.argv[2].encode()
    endpoints.TCP4ServerEndpoint(reactor, port, backlog=1024, interface="127.0.0.1").listen(Factory(domain))
    reactor.run()
