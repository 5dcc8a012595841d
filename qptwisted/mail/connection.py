"""Per-connection state that plugins see: who is talking, how, and notes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qptwisted.smtp.session import Session

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What the TLS layer negotiated, for Received and for plugins."""

    version: str
    cipher: str
    peer_certificate: Any = None


@dataclass(slots=True, eq=False)
class Connection:
    """One SMTP connection (qpsmtpd's ``Qpsmtpd::Connection``).

    ``notes`` survive RSET and STARTTLS; ``auth_results`` collects
    RFC 8601 result strings (``spf=pass smtp.mailfrom=...``) that plugins add
    for the Authentication-Results header the engine writes.
    """

    remote_ip: str
    remote_port: int
    local_ip: str = "127.0.0.1"
    local_port: int = 25
    remote_host: str | None = None
    hello: str | None = None
    hello_host: str | None = None
    relay_client: bool = False
    tls: TLSInfo | None = None
    auth_user: str | None = None
    auth_mechanism: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    auth_results: list[str] = field(default_factory=list)
    id: int = field(default_factory=lambda: next(_ids))
    session: Session | None = field(default=None, repr=False)

    @property
    def remote_info(self) -> str:
        """The client as shown in replies and Received: its name or ``[ip]``."""
        return self.remote_host or f"[{self.remote_ip}]"

    @property
    def protocol(self) -> str:
        """RFC 3848 with-protocol: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA."""
        if self.hello != "ehlo":
            return "SMTP"
        return "ESMTP" + ("S" if self.tls else "") + ("A" if self.auth_user else "")

    def respond(self, code: int, message: str) -> None:
        """Send a reply now; for plugins that answer themselves and return DONE."""
        if self.session is not None:
            self.session.respond(code, message)

    def disconnect(self) -> None:
        """Close the connection after what has been written."""
        if self.session is not None:
            self.session.disconnect()

    def reset_after_tls(self) -> None:
        """Forget HELO and AUTH state, as RFC 3207 demands after STARTTLS."""
        self.hello = self.hello_host = None
        self.auth_user = self.auth_mechanism = None
