"""``qpsmtpd inetd``: one SMTP session on standard input and output (inetd, tcpserver, socat, systemd).

qpsmtpd's oldest way to run: a super-server accepts the connection and
starts one process per client with the connection as its standard input
and output::

    tcpserver -HRl0 0 25 qpsmtpd inetd --config /etc/qpsmtpd           # ucspi-tcp
    socat TCP-LISTEN:25,fork,reuseaddr EXEC:'qpsmtpd inetd',nofork     # socat
    smtp stream tcp nowait qpsmtpd /usr/bin/qpsmtpd qpsmtpd inetd      # inetd.conf

When standard input is the TCP socket itself (tcpserver, inetd, systemd's
``Accept=yes``, socat with ``nofork``) it is adopted as a real connection:
client address, STARTTLS and flow control work as in the daemon. Otherwise
(pipes) the session runs over them and the addresses come from the
environment (``TCPREMOTEIP``/``TCPREMOTEPORT``/``TCPLOCALIP``/``TCPLOCALPORT``
of ucspi-tcp, ``SOCAT_PEERADDR``/... of socat); STARTTLS is not offered
there (the ``tls`` plugin answers 454). ``RELAYCLIENT`` (set by tcpserver's rules) works as with qpsmtpd.

Log lines go to standard error (tcpserver hands them to its logger), never
to standard output, which is the client's. The process ends with the session.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.stdio import StandardIO
from twisted.logger import Logger

from qptwisted.service.server import SMTPFactory

_log = Logger(namespace="qptwisted.service.inetd")
_ENVIRONMENT = (("TCPREMOTEIP", "TCPREMOTEPORT", "TCPLOCALIP", "TCPLOCALPORT"),
                ("SOCAT_PEERADDR", "SOCAT_PEERPORT", "SOCAT_SOCKADDR", "SOCAT_SOCKPORT"))


def _address(host: str, port: str) -> IPv4Address | IPv6Address:
    kind = IPv6Address if ":" in host else IPv4Address
    return kind("TCP", host, int(port) if port.isdigit() else 0)


def environment_addresses(environ: Mapping[str, str]) -> tuple[Any, Any]:
    """``(peer, host)`` addresses from ucspi-tcp's or socat's variables (loopback when neither is set)."""
    for remote_ip, remote_port, local_ip, local_port in _ENVIRONMENT:
        if environ.get(remote_ip):
            return (_address(environ[remote_ip], environ.get(remote_port, "0")),
                    _address(environ.get(local_ip) or "127.0.0.1", environ.get(local_port, "25")))
    return _address("127.0.0.1", "0"), _address("127.0.0.1", "25")


class _PipeTransport(StandardIO):
    """Standard input/output as a connection whose addresses come from the environment."""

    def __init__(self, protocol: Any, peer: Any, host: Any, **kwargs: Any) -> None:
        self._peer, self._host = peer, host
        super().__init__(protocol, **kwargs)

    @property
    def connected(self) -> bool:
        """True until both pipes are closed (what a drain looks at)."""
        return not self.disconnected

    def getPeer(self) -> Any:
        """The client, as the super-server told us."""
        return self._peer

    def getHost(self) -> Any:
        """The local end, as the super-server told us."""
        return self._host

    def abortConnection(self) -> None:
        """Close now (a drain that ran out of time)."""
        self.loseConnection()



class _OneSession(SMTPFactory):
    """The factory of the single session; the process stops when it ends.

    Over pipes there is no socket to start TLS on: the connection is noted
    ``tls_unavailable`` before any hook runs, so the ``tls`` plugin neither
    offers nor accepts STARTTLS.
    """

    def __init__(self, engine: Any, done: Any) -> None:
        super().__init__(engine)
        self.done = done
        self.pipes = False

    def opened(self, ip: str) -> tuple[int, int]:
        """Count the connection; note when it runs over pipes (the session exists by now)."""
        if self.pipes:
            for protocol in self.protocols:
                protocol.session.connection.notes["tls_unavailable"] = True
        return super().opened(ip)

    def closed(self, ip: str) -> None:
        """The session ended: stop the process."""
        super().closed(ip)
        self.done()


def _socket_family(fd: int) -> int | None:
    """The address family of ``fd`` when it is a connected TCP socket, else None."""
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None  # not a socket
    try:
        if probe.type != socket.SOCK_STREAM or probe.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        probe.getpeername()
        return int(probe.family)
    except OSError:
        return None
    finally:
        probe.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one session on standard input/output; the exit status is 0 unless the configuration fails."""
    parser = argparse.ArgumentParser(prog="qpsmtpd inetd",
                                     description="Serve one SMTP session on standard input/output.")
    parser.add_argument("--config", "-c", default=None, help="config directory")
    parser.add_argument("--grace", type=float, default=30.0,
                        help="seconds a transaction in flight may take to finish on SIGTERM")
    options = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from qptwisted.core.config import ConfigError
    from qptwisted.lib.maildir_writer import write_in_process
    from qptwisted.service.server import QPSMTPDService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    try:
        top = QPSMTPDService(options.config, grace=options.grace)
    except ConfigError as err:
        print(f"qpsmtpd inetd: {err}", file=sys.stderr)
        os.write(1, b"421 4.3.0 Service temporarily unavailable\r\n")
        return 1
    stopping: list[bool] = []

    def done() -> None:
        if not stopping:
            stopping.append(True)
            reactor.callLater(0, reactor.stop)  # type: ignore[attr-defined]

    # one session: starting a Maildir writer process would cost more than it saves
    write_in_process(top.engine)
    factory = _OneSession(top.engine, done)
    top.factory = factory
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)  # type: ignore[attr-defined]
    top.startService()
    family = _socket_family(0)
    if family is not None:
        reactor.adoptStreamConnection(0, family, factory)  # type: ignore[attr-defined]
        # the adopted connection holds a duplicate: ours must go, or the client never sees the close
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
    else:
        peer, host = environment_addresses(os.environ)
        factory.pipes = True
        _PipeTransport(factory.buildProtocol(peer), peer, host, reactor=reactor)
    reactor.run()  # type: ignore[attr-defined]
    return 0


__all__ = ["main", "environment_addresses"]


if __name__ == "__main__":
    sys.exit(main())
