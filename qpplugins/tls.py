"""tls: STARTTLS (RFC 3207) and implicit TLS (SMTPS, port 465 style).

Advertises ``STARTTLS`` in EHLO until TLS is active. ``STARTTLS`` answers
``220 Ready to start TLS`` and switches the connection to TLS; plaintext the
client pipelined behind STARTTLS is discarded, never executed
(CVE-2011-0411). After the handshake the HELO greeting, AUTH state and the
transaction are forgotten, so the client must say EHLO again; that EHLO
lists AUTH (see ``tls_before_auth``) and no longer STARTTLS. ``STARTTLS``
with arguments gets 501, a second one 503. A failed handshake is logged and
the connection closed.

Connections to a local port listed in ``tls_implicit_ports`` (default 465)
start TLS at once, before the greeting (SMTPS): listen on such a port with
``--port tcp:465`` and the same certificates serve both.

Received headers then say ``with ESMTPS`` (``ESMTPSA`` after AUTH) and the
cipher; ``connection.tls`` holds the TLS version, cipher and the client's
certificate (a ``cryptography`` object, when one was sent) for other plugins.
Certificates are read when the plugin loads, so SIGHUP (which reloads the
configuration) picks up renewed certificates for new connections. Renewed
files are also noticed without a signal (ACME renew hooks forget to send
one): the plugin looks at its certificate files every ``tls_reload_interval``
seconds and, once a change has held still for one look, loads them for new
connections. A renewed file that cannot be used (half written, a key that
does not match) is logged once and the certificate in use is kept; TLS
sessions already running are never touched.

Arguments: ``tls [CERT KEY [CA]]`` (paths relative to the config directory).

Config files:

- ``tls_cert``, ``tls_key``, ``tls_ca``: the same, when no arguments are
  given (default ``ssl/qpsmtpd-server.crt`` and ``ssl/qpsmtpd-server.key``;
  ``qptwisted-selfsigned`` writes those for a first run). The certificate file
  may hold the chain, and the key too.
- ``tls_certdir``: a directory of ``*.pem`` files, each with a key and its
  certificate (and chain); the client's SNI name picks the certificate, the
  first file (by name) is the default. Replaces ``tls_cert``/``tls_key``.
- ``tls_min_version``: ``TLSv1.2`` (default) or ``TLSv1.3``.
- ``tls_ciphers``: an OpenSSL cipher string for TLS 1.2 (default: Twisted's
  secure default list).
- ``tls_implicit_ports``: local ports with implicit TLS (default ``465``).
- ``tls_request_client_cert``: 1 asks clients for a certificate (any is
  accepted, none is fine); it shows up in ``connection.tls.peer_certificate``.
- ``tls_before_auth``: 1 (default) keeps AUTH off plaintext connections.
- ``tls_session_tickets``: 1 (default) lets returning clients resume their
  TLS session with a ticket (a shorter handshake: no certificate sent or
  checked); 0 makes every connection do a full handshake. The ticket key
  lives in the process and is replaced whenever the certificates are
  (re)loaded.
- ``tls_reload_interval``: seconds between looks at the certificate files
  (default 10; 0 turns the watching off).

A connection whose ``notes["tls_unavailable"]`` is set (``qpsmtpd inetd``
over pipes) is not offered STARTTLS, and ``STARTTLS`` gets 454.

config/plugins::

    tls
    tls ssl/mx.example.org.crt ssl/mx.example.org.key
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qptwisted import (
    DECLINED,
    DONE,
    LOGERROR,
    LOGINFO,
    ArgumentError,
    ConfigError,
    HookAnswer,
    Plugin,
    Transaction,
    arg,
    parse_bool,
)
from qptwisted.lib.filewatch import FileWatch
from qptwisted.lib.tls import (
    CertificateBundle,
    TLSConfigError,
    load_bundle_files,
    load_directory,
    server_options,
)


class TLS(Plugin):
    """STARTTLS and implicit TLS with certificates from the config directory."""

    name = "tls"
    cert: Path | None = arg.path(None, "the certificate (and chain) file; default: config tls_cert",
                                 positional=True)
    key: Path | None = arg.path(None, "its private key file (needed with cert)", positional=True)
    ca: Path | None = arg.path(None, "a CA file sent along", positional=True)

    def register(self, *args: str) -> None:
        """Load the certificates, build the server context, watch the files."""
        if self.cert is not None and self.key is None:
            raise ArgumentError(f"plugin {self.plugin_name}: argument key: is required with a certificate "
                                "(tls CERT KEY [CA])")
        resolve = self.engine.config.resolve
        self.minimum = self.config("tls_min_version", "TLSv1.2") or "TLSv1.2"
        self.ciphers = self.config("tls_ciphers")
        try:
            self.client_cert = parse_bool(self.config("tls_request_client_cert", "0") or "0")
            self.tickets = parse_bool(self.config("tls_session_tickets", "1") or "1")
            interval = float(self.config("tls_reload_interval", "10") or "10")
        except ValueError as err:
            raise ConfigError(f"tls: {err}") from None
        certdir = self.config("tls_certdir")
        if self.cert is not None and self.key is not None:
            self.files: list[Path] = [p for p in (self.cert, self.key, self.ca) if p is not None]
            self.certdir: Path | None = None
        elif certdir:
            self.certdir = resolve(certdir)
            self.files = [self.certdir]
        else:
            self.certdir = None
            ca_name = self.config("tls_ca")
            self.files = [resolve(self.config("tls_cert", "ssl/qpsmtpd-server.crt") or ""),
                          resolve(self.config("tls_key", "ssl/qpsmtpd-server.key") or ""),
                          *([resolve(ca_name)] if ca_name else [])]
        try:
            self.options, self.bundles = self.load()
        except TLSConfigError as err:
            raise ConfigError(f"tls: {err} (qptwisted-selfsigned makes a certificate for a first run)") \
                from None
        except Exception as err:  # OpenSSL errors, e.g. a bad cipher string
            raise ConfigError(f"tls: cannot build a TLS context: {err}") from None
        ports = self.config_list("tls_implicit_ports") or ["465"]
        self.implicit_ports = frozenset(int(p) for line in ports for p in line.split())
        self.register_hook("connect", self.implicit_tls, unshift=True)
        if interval > 0:
            self.watch = FileWatch(self.files, self.reload_certificates)
            self.engine.call_every(interval, self.watch.poll)

    def load(self) -> tuple[Any, list[CertificateBundle]]:
        """Read the certificate files and build a server context (raises on any problem)."""
        if self.certdir is not None:
            bundles = load_directory(self.certdir)
            options = server_options(bundles[0], self.minimum, self.ciphers, sni=bundles,
                                     request_client_cert=self.client_cert, session_tickets=self.tickets)
        else:
            cert, key, *ca = self.files
            bundles = [load_bundle_files(cert, key, ca[0] if ca else None)]
            options = server_options(bundles[0], self.minimum, self.ciphers,
                                     request_client_cert=self.client_cert, session_tickets=self.tickets)
        options.getContext()  # fail now, not at the first STARTTLS
        return options, bundles

    def reload_certificates(self) -> bool:
        """The files changed: use them for new connections, or keep the current ones if they are broken."""
        try:
            options, bundles = self.load()
        except Exception as err:
            self.log(LOGERROR, f"renewed certificate files cannot be used, keeping the current certificate "
                     f"(valid until {self.bundles[0].certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC): "
                     f"{err}")
            return False
        self.options, self.bundles = options, bundles
        self.log(LOGINFO, f"certificate reloaded: {', '.join(bundles[0].names()) or 'no names'}, valid until "
                 f"{bundles[0].certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
        return True

    def implicit_tls(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        if connection.local_port in self.implicit_ports and connection.tls is None:
            connection.notes["tls_implicit"] = True
            connection.start_tls(self.options, implicit=True)
        return DECLINED

    def hook_ehlo(self, transaction: Transaction, host: str, *args: str) -> HookAnswer:
        notes = transaction.connection.notes
        if transaction.connection.tls is None and not notes.get("tls_implicit") \
                and not notes.get("tls_unavailable"):
            transaction.notes.setdefault("capabilities", []).append("STARTTLS")
        return DECLINED

    def hook_unrecognized_command(self, transaction: Transaction, verb: str, rest: str) -> HookAnswer:
        if verb != "starttls":
            return DECLINED
        connection = transaction.connection
        if rest:
            connection.respond(501, "Syntax error (no parameters allowed)", "5.5.4")
        elif connection.tls is not None or connection.notes.get("tls_implicit"):
            connection.respond(503, "TLS already active", "5.5.1")
        elif connection.notes.get("tls_unavailable"):  # e.g. qpsmtpd inetd over pipes
            connection.respond(454, "TLS not available", "4.7.0")
        else:
            self.log(LOGINFO, f"STARTTLS from {connection.remote_ip}")
            connection.start_tls(self.options)
        return DONE
