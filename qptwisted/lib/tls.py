"""TLS helpers: certificates as ``cryptography`` objects, server contexts, SNI.

pyOpenSSL deprecates passing its own ``X509``/``PKey`` objects, so everything
here loads PEM with ``cryptography`` and hands those objects to
:class:`twisted.internet.ssl.CertificateOptions` (no deprecation warnings).

Also the ``qptwisted-selfsigned`` console script (:func:`main`), which writes
a self-signed certificate and key for a first run.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtensionOID, NameOID
from OpenSSL import SSL
from twisted.internet import ssl

_VERSIONS = {
    "tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1_2": ssl.TLSVersion.TLSv1_2, "1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3, "tlsv1_3": ssl.TLSVersion.TLSv1_3, "1.3": ssl.TLSVersion.TLSv1_3,
}


class TLSConfigError(ValueError):
    """A certificate, key or TLS setting that cannot be used."""


def tls_version(name: str) -> Any:
    """``TLSv1.2`` / ``TLSv1.3`` (or ``1.2``) as a Twisted ``TLSVersion``; lower is refused."""
    try:
        return _VERSIONS[name.strip().lower()]
    except KeyError:
        raise TLSConfigError(f"unsupported minimum TLS version {name!r} (use TLSv1.2 or TLSv1.3)") from None


@dataclass
class CertificateBundle:
    """A private key, its certificate and the chain that goes with it."""

    key: Any
    certificate: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)

    def names(self) -> list[str]:
        """DNS names of the certificate (SubjectAltName, else the common name), lowercased."""
        try:
            san: Any = self.certificate.extensions.get_extension_for_oid(
                ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
            names = [str(n).lower() for n in san.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            names = []
        if not names:
            names = [str(a.value).lower() for a in
                     self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return names


def _public_bytes(key: Any) -> bytes:
    return bytes(key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))


def load_bundle(cert_pem: bytes, key_pem: bytes | None = None,
                ca_pem: bytes | None = None) -> CertificateBundle:
    """Parse PEM data: the certificate whose public key matches the key comes first.

    ``cert_pem`` may hold the key too, and intermediates (the chain).
    """
    try:
        certificates = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as err:
        raise TLSConfigError(f"no certificate in PEM data: {err}") from None
    try:
        key = load_pem_private_key(key_pem if key_pem is not None else cert_pem, None)
    except (ValueError, TypeError) as err:
        raise TLSConfigError(f"no usable (unencrypted) private key: {err}") from None
    wanted = _public_bytes(key)
    leaf = [c for c in certificates if _public_bytes(c) == wanted]
    if not leaf:
        raise TLSConfigError("the private key matches none of the certificates")
    chain = [c for c in certificates if c is not leaf[0]]
    if ca_pem:
        chain += x509.load_pem_x509_certificates(ca_pem)
    return CertificateBundle(key, leaf[0], chain)


def load_bundle_files(cert: Path, key: Path | None = None, ca: Path | None = None) -> CertificateBundle:
    """:func:`load_bundle` from files; errors name the file."""
    try:
        return load_bundle(cert.read_bytes(), key.read_bytes() if key else None,
                           ca.read_bytes() if ca else None)
    except OSError as err:
        raise TLSConfigError(f"cannot read {err.filename}: {err.strerror}") from None
    except TLSConfigError as err:
        raise TLSConfigError(f"{cert}: {err}") from None


def _accept_any(connection: Any, certificate: Any, errno: int, depth: int, ok: int) -> bool:
    return True


def server_options(bundle: CertificateBundle, minimum: str = "TLSv1.2", ciphers: str | None = None,
                   sni: Sequence[CertificateBundle] = (),
                   request_client_cert: bool = False, session_tickets: bool = True) -> ssl.CertificateOptions:
    """Server-side ``CertificateOptions`` for ``bundle``; ``sni`` adds certificates chosen by name.

    ``bundle`` is the default (no or unknown server name). Each bundle in
    ``sni`` serves the names in its certificate, wildcards (``*.example.org``)
    included. ``request_client_cert`` asks clients for a certificate and
    accepts any (or none): plugins judge it from ``connection.tls``.
    ``session_tickets`` lets a client that comes back resume its TLS session
    (RFC 5077, TLS 1.3 tickets) without a certificate exchange; the ticket key is
    made per context, so it changes with every certificate (re)load and
    tickets do not carry over between worker processes.
    """
    kwargs: dict[str, Any] = {"raiseMinimumTo": tls_version(minimum), "enableSessionTickets": session_tickets}
    if ciphers:
        kwargs["acceptableCiphers"] = ssl.AcceptableCiphers.fromOpenSSLCipherString(ciphers)

    def options(one: CertificateBundle, **extra: Any) -> ssl.CertificateOptions:
        # cryptography objects: pyOpenSSL deprecates its own X509/PKey here (Twisted's stubs lag)
        made = ssl.CertificateOptions(privateKey=one.key, certificate=one.certificate,  # type: ignore[arg-type]
                                      extraCertChain=one.chain or None,  # type: ignore[arg-type]
                                      **kwargs, **extra)
        if request_client_cert:  # the context is built once and cached by CertificateOptions
            made.getContext().set_verify(SSL.VERIFY_PEER, _accept_any)
        return made

    if not sni:
        return options(bundle)
    contexts: dict[str, SSL.Context] = {}
    for one in sni:
        context = options(one).getContext()
        for name in one.names():
            contexts.setdefault(name, context)

    def for_name(server_name: bytes | None) -> SSL.Context | None:
        if not server_name:
            return None
        name = server_name.decode("ascii", "replace").lower().rstrip(".")
        found = contexts.get(name)
        if found is None and "." in name:
            found = contexts.get("*." + name.split(".", 1)[1])
        return found

    return options(bundle, contextForServerName=for_name)


def load_directory(directory: Path) -> list[CertificateBundle]:
    """Every ``*.pem`` file in ``directory`` holding a key and its certificate (sorted by name)."""
    bundles = []
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix == ".pem" and p.is_file())
    except OSError as err:
        raise TLSConfigError(f"cannot read certificate directory {directory}: {err.strerror}") from None
    for path in files:
        bundles.append(load_bundle_files(path))
    if not bundles:
        raise TLSConfigError(f"no PEM files with a key and certificate in {directory}")
    return bundles


def make_self_signed(hostnames: Iterable[str] = ("localhost",), ips: Iterable[str] = ("127.0.0.1",),
                     days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed EC P-256 certificate and its key, both PEM: ``(cert, key)``."""
    names = list(hostnames)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def main(argv: list[str] | None = None) -> int:
    """``qptwisted-selfsigned``: write a self-signed certificate for the ``tls`` plugin."""
    parser = argparse.ArgumentParser(
        prog="qptwisted-selfsigned",
        description="Write a self-signed certificate and key (for first runs and tests; "
                    "use a real certificate in production).")
    parser.add_argument("--config", "-c", default="config",
                        help="config directory; files go to its ssl/ (default: ./config)")
    parser.add_argument("--host", action="append", default=None,
                        help="DNS name for the certificate (repeatable; default: config/me or localhost)")
    parser.add_argument("--ip", action="append", default=None, help="IP address SAN (default 127.0.0.1)")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    options = parser.parse_args(argv)
    config = Path(options.config)
    hosts = options.host
    if not hosts:
        me = config / "me"
        hosts = [me.read_text().split()[0]] if me.is_file() and me.read_text().split() else ["localhost"]
    cert_path = config / "ssl" / "qpsmtpd-server.crt"
    key_path = config / "ssl" / "qpsmtpd-server.key"
    if not options.force and (cert_path.exists() or key_path.exists()):
        print(f"{cert_path} or {key_path} exists; use --force to replace", file=sys.stderr)
        return 1
    cert, key = make_self_signed(hosts, options.ip or ["127.0.0.1"], options.days)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert)
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key)
    print(f"wrote {cert_path} and {key_path} for {', '.join(hosts)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
