"""Per-connection state that plugins see: who is talking, how, and notes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from qptwisted.interfaces import IConnectionControl
from qptwisted.mail.ondemand import OnDemand

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What the TLS layer negotiated, for Received and for plugins."""

    version: str
    cipher: str
    peer_certificate: Any = None

    @classmethod
    def from_handle(cls, handle: Any) -> TLSInfo:
        """What an ``OpenSSL.SSL.Connection`` negotiated (the peer certificate as ``cryptography``)."""
        try:
            peer = handle.get_peer_certificate(as_cryptography=True)
        except TypeError:  # older pyOpenSSL
            raw = handle.get_peer_certificate()
            peer = raw.to_cryptography() if raw is not None else None
        return cls(version=handle.get_protocol_version_name(), cipher=handle.get_cipher_name() or "",
                   peer_certificate=peer)


@dataclass(slots=True, eq=False)
class Connection:
    """One SMTP connection (qpsmtpd's ``Qpsmtpd::Connection``).

    ``notes`` survive RSET and STARTTLS; ``auth_results`` collects
    RFC 8601 result strings (``spf=pass smtp.mailfrom=...``) that plugins add
    for the Authentication-Results header the engine writes.

    ``early_talker`` is set by the engine when the client sent bytes while it
    had to wait for an answer: before the greeting, or after DATA before the
    ``354``. Plugins act on the connection only through :meth:`respond`,
    :meth:`disconnect` and :meth:`start_tls`.
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
    early_talker: bool = False
    id: int = field(default_factory=lambda: next(_ids))
    control: IConnectionControl | None = field(default=None, repr=False)
    _notes: dict[str, Any] | None = field(default=None, repr=False)
    _auth_results: list[str] | None = field(default=None, repr=False)

    #: what plugins note for the rest of the connection (a dict, made when first used)
    notes = OnDemand["dict[str, Any]"](dict)
    #: RFC 8601 results for every message's Authentication-Results (a list, made when first used)
    auth_results = OnDemand["list[str]"](list)

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

    def respond(self, code: int, message: str, enhanced: str | None = "") -> None:
        """Send a reply now; for plugins that answer themselves and return DONE."""
        if self.control is not None:
            self.control.respond(code, message, enhanced)

    def disconnect(self) -> None:
        """Close the connection after what has been written."""
        if self.control is not None:
            self.control.disconnect()

    def start_tls(self, context: Any, implicit: bool = False) -> None:
        """Switch to TLS with ``context`` (STARTTLS: answers 220 first; ``implicit``: SMTPS)."""
        if self.control is not None:
            self.control.start_tls(context, implicit)

    def reset_after_tls(self) -> None:
        """Forget HELO and AUTH state, as RFC 3207 demands after STARTTLS."""
        self.hello = self.hello_host = None
        self.auth_user = self.auth_mechanism = None
