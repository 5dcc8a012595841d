"""Test keys and signed messages for the DKIM and DMARC tests (generated per run, never stored)."""

from __future__ import annotations

import base64

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

_KEYS: dict[str, tuple[bytes, str]] = {}


def keypair(name: str = "default") -> tuple[bytes, str]:
    """``(PEM private key, DKIM TXT record)`` of a 1024-bit RSA key made for this run."""
    if name not in _KEYS:
        _KEYS[name] = _generate()
    return _KEYS[name]


def _generate() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


def sign(message: bytes, domain: str = "example.org", selector: str = "sel", key: str = "default") -> bytes:
    """``message`` with a DKIM-Signature of ``domain`` on top (LF line endings)."""
    header = dkim.sign(message.replace(b"\n", b"\r\n"), selector.encode(), domain.encode(), keypair(key)[0],
                       canonicalize=(b"relaxed", b"relaxed"), include_headers=[b"from", b"subject", b"to"])
    return header.replace(b"\r\n", b"\n") + message


MESSAGE = (b"From: Alice <alice@example.org>\nTo: bob@example.test\nSubject: hello\n"
           b"Message-ID: <m1@example.org>\n\nHello Bob,\nthis is signed.\n")
