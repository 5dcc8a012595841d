"""The floor of any SMTP server on Twisted: the reactor, and canned replies with no SMTP logic.

    python twisted_floor.py PORT

It answers each command line with a fixed reply and finds the end of a
message with one search, sending each reply straight to the socket as
qptwisted does: what is left of a server's CPU per message once parsing,
hooks, plugins and the transaction are taken away. Only for loads that
never check what it answers (smtp-source and the pipelined client).
"""

from __future__ import annotations

import sys

from twisted.internet import protocol, reactor

_REPLIES = {b"EHLO": b"250-floor\r\n250 PIPELINING\r\n", b"HELO": b"250 floor\r\n",
            b"DATA": b"354 go ahead\r\n", b"QUIT": b"221 2.0.0 bye\r\n"}


class Floor(protocol.Protocol):
    def connectionMade(self) -> None:
        self.in_data = False
        self.buffer = b""
        self.transport.write(b"220 floor ESMTP\r\n")

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        out = []
        while buffer:
            if self.in_data:
                end = buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                buffer, self.in_data = buffer[end + 5:], False
                out.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            end = buffer.find(b"\n")
            if end < 0:
                break
            verb, buffer = buffer[:4].upper(), buffer[end + 1:]
            if verb == b"DATA":
                self.in_data = True
                buffer = b"\r\n" + buffer  # an empty message ends at once
            out.append(_REPLIES.get(verb, b"250 2.1.0 Ok\r\n"))
        self.buffer = buffer
        if out:
            self.transport.socket.send(b"".join(out))


if __name__ == "__main__":
    reactor.listenTCP(int(sys.argv[1]), protocol.Factory.forProtocol(Floor), interface="127.0.0.1",
                      backlog=1024)
    reactor.run()
