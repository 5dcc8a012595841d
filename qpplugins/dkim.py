"""dkim: verify DKIM signatures (RFC 6376) on incoming mail, sign outgoing mail.

Verification (clients that are neither relay clients nor authenticated), at
``data_post_headers``: every ``DKIM-Signature`` is checked with dkimpy on
the engine's thread pool; key lookups go to the engine's nameservers
(config ``resolvers``). Each result becomes one Authentication-Results entry,
``dkim=pass|fail|permerror|temperror header.d=<d> header.s=<s> header.b=<8
chars>`` (RFC 8601, RFC 6008), or ``dkim=none`` when the message is
unsigned; the transaction note ``dkim`` holds a list of dicts (``result``,
``domain``, ``selector``) that ``dmarc`` reads.

Signing (relay clients and authenticated users), at ``data_post_headers``:
the domain of the ``From`` header (else of the envelope sender) is looked up
in ``config/dkim/<domain>/``: ``selector`` holds the selector name,
``private`` the PEM private key (RSA or Ed25519, base64 for Ed25519). A
domain without a key directory is sent unsigned; keys are never logged.

Arguments (``name value`` pairs):

``reject 0|1|naughty``
    0 (default) only records results; 1 refuses (at ``data_post``)
    messages whose every signature failed (``fail``); DMARC is the usual
    place for such decisions.
``reject_type perm|temp|...``
    default ``perm``.
``sign 1|0``
    sign for relay clients and authenticated users (default 1).
``canonicalization H/B``
    ``relaxed/relaxed`` (default), ``relaxed/simple``, ``simple/simple``...
``headers h1:h2:...``
    the header fields to sign (default From, To, Cc, Subject, Date,
    Message-ID, Reply-To, In-Reply-To, References, MIME-Version,
    Content-Type, Content-Transfer-Encoding).
``minkey N``
    smallest RSA key accepted when verifying (default 1024).
``timeout N``
    seconds per key lookup (default: the engine's ``dns_timeout``).

config/plugins::

    dkim sign 1 canonicalization relaxed/relaxed
"""

from __future__ import annotations

import logging
from typing import Any

import dkim as dkimpy
import dns.exception
import dns.resolver
from twisted.internet.defer import Deferred

from qptwisted import DECLINED, DENY, LOGINFO, LOGWARN, ArgumentError, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin, reject_argument, reject_type_argument

#: dkimpy logs at ERROR for every bad signature; the plugin logs results itself
_QUIET = logging.getLogger("qptwisted.dkim.dkimpy")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

DEFAULT_HEADERS = ("from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
                   "references", "mime-version", "content-type", "content-transfer-encoding")


class _TempDNSError(Exception):
    """A key lookup that timed out or failed on the server."""


def txt_function(resolver: dns.resolver.Resolver, missing: list[str] | None = None) -> Any:
    """A dkimpy ``dnsfunc`` that asks ``resolver`` (NXDOMAIN/no data -> None, noted in ``missing``)."""

    def get_txt(name: bytes | str, timeout: float = 5) -> bytes | None:
        found = lookup(name, timeout)
        if found is None and missing is not None:
            missing.append(name.decode() if isinstance(name, bytes) else name)
        return found

    def lookup(name: bytes | str, timeout: float) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(text, "TXT", lifetime=timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as err:
            raise _TempDNSError(str(err)) from err
        for rdata in answer:
            return b"".join(rdata.strings)
        return None

    return get_txt


def verify_all(message: bytes, resolver: dns.resolver.Resolver, minkey: int,
               timeout: float) -> list[dict[str, str]]:
    """Check every DKIM-Signature of ``message`` (blocking): a list of result dicts."""
    missing: list[str] = []
    dnsfunc = txt_function(resolver, missing)
    checker = dkimpy.DKIM(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), minkey=minkey,
                          timeout=int(max(timeout, 1)), logger=_QUIET)
    signatures = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    results: list[dict[str, str]] = []
    for index, value in enumerate(signatures):
        try:
            tags = dkimpy.util.parse_tag_value(value)
        except Exception:
            tags = {}
        info = {"domain": tags.get(b"d", b"").decode("ascii", "replace").lower(),
                "selector": tags.get(b"s", b"").decode("ascii", "replace"),
                "b": b"".join(tags.get(b"b", b"").split())[:8].decode("ascii", "replace")}
        del missing[:]
        try:
            ok = checker.verify(index, dnsfunc=dnsfunc)
            if not ok and missing:
                info["result"], info["reason"] = "permerror", "no key in DNS"
            else:
                info["result"] = "pass" if ok else "fail"
                info["reason"] = "" if ok else "signature did not verify"
        except _TempDNSError as err:
            info["result"], info["reason"] = "temperror", f"key lookup failed: {err}"
        except dkimpy.DKIMException as err:
            reason = str(err)
            tampered = isinstance(err, dkimpy.ValidationError) and reason.startswith("body hash mismatch")
            info["result"] = "fail" if tampered else "permerror"
            info["reason"] = "body hash mismatch" if tampered else reason
        results.append(info)
    return results


def sign_message(message: bytes, selector: str, domain: str, key: bytes,
                 canonicalization: tuple[bytes, bytes], headers: list[bytes]) -> bytes:
    """The ``DKIM-Signature`` header line for ``message`` (blocking), LF line endings."""
    algorithm = b"rsa-sha256" if b"PRIVATE KEY-----" in key else b"ed25519-sha256"
    present = {line.split(b":", 1)[0].strip().lower() for line in message.split(b"\n\n", 1)[0].split(b"\n")
               if b":" in line and not line[:1].isspace()}
    include = [h for h in headers if h in present] or [b"from"]
    crlf = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    line = dkimpy.sign(crlf, selector.encode(), domain.encode(), key, canonicalize=canonicalization,
                       include_headers=include, signature_algorithm=algorithm, logger=_QUIET)
    return line.replace(b"\r\n", b"\n")


class DKIM(PolicyPlugin):
    """DKIM verification and signing."""

    name = "dkim"
    reject = reject_argument("0", "1: refuse messages whose every signature failed; 0: only record; "
                             "naughty: leave it to the naughty plugin")
    reject_type = reject_type_argument("perm")
    sign: bool = arg.bool(True, "sign for relay clients and authenticated users")
    canonicalization: str = arg.str("relaxed/relaxed", "header/body canonicalization of signatures: "
                                    "relaxed or simple")
    headers: str | None = arg.str(None, "the header fields to sign, h1:h2:... (default: From, To, Cc, "
                                  "Subject, Date, Message-ID ...)")
    minkey: int = arg.int(1024, "smallest RSA key accepted when verifying, in bits")
    lookup_timeout: float | None = arg.duration(None, "seconds per DNS lookup (default: the engine's "
                                                "dns_timeout)", aliases=("timeout",))

    def register(self, *args: str) -> None:
        """Check the canonicalization and the header list."""
        header_c, _, body_c = self.canonicalization.lower().partition("/")
        if header_c not in ("relaxed", "simple") or (body_c or "simple") not in ("relaxed", "simple"):
            raise ArgumentError(f"plugin {self.plugin_name}: argument canonicalization: must be "
                                "relaxed|simple[/relaxed|simple]")
        self.canon = (header_c.encode(), (body_c or "simple").encode())
        names = self.headers
        self.sign_headers = [h.strip().lower().encode() for h in names.split(":")] if names else \
            [h.encode() for h in DEFAULT_HEADERS]

    def hook_data_post_headers(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        if connection.relay_client or connection.auth_user:
            return self.sign_transaction(transaction) if self.sign else DECLINED
        message = transaction.message_bytes()
        if b"dkim-signature:" not in message.split(b"\n\n", 1)[0].lower():
            transaction.notes["dkim"] = []
            transaction.auth_results.append("dkim=none")
            return DECLINED
        resolver = self.engine.resolver
        timeout = self.lookup_timeout or resolver.timeout
        work: Deferred[list[dict[str, str]]] = self.defer_to_thread(
            verify_all, message, resolver.dnspython(timeout), self.minkey, timeout)
        return work.addCallback(self._record, transaction)

    def _record(self, results: list[dict[str, str]], transaction: Transaction) -> HookAnswer:
        transaction.notes["dkim"] = results
        for info in results:
            self.log(LOGINFO, f"{info['result']} d={info['domain']} s={info['selector']}"
                     + (f" ({info['reason']})" if info.get("reason") else ""))
            why = info.get("reason", "").replace("\\", "").replace('"', "'")
            reason = f' reason="{why}"' if why and info["result"] != "pass" else ""
            transaction.auth_results.append(
                f"dkim={info['result']}{reason} header.d={info['domain']} header.s={info['selector']}"
                f" header.b={info['b']}")
        return DECLINED

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        results = transaction.notes.get("dkim")
        if not results or any(info["result"] == "pass" for info in results):
            return DECLINED
        if all(info["result"] == "fail" for info in results):
            return self.get_reject(transaction, "DKIM signature verification failed", default=DENY)
        return DECLINED

    # -- signing -------------------------------------------------------------
    def signing_domain(self, transaction: Transaction) -> str | None:
        """The From header's domain, else the envelope sender's."""
        from email.utils import getaddresses

        addresses = getaddresses([str(v) for v in transaction.header.get_all("From", [])])
        for _, address in addresses:
            if "@" in address:
                return address.rsplit("@", 1)[1].lower().strip(">")
        sender = transaction.sender
        return sender.host.lower() if sender is not None and sender.host else None

    def load_key(self, domain: str) -> tuple[str, bytes] | None:
        """``(selector, private key)`` of ``domain`` from ``config/dkim/<domain>/``, or None."""
        if not domain or "/" in domain or domain.startswith("."):
            return None
        directory = self.engine.config.resolve("dkim") / domain
        selector_file, key_file = directory / "selector", directory / "private"
        if not (selector_file.is_file() and key_file.is_file()):
            return None
        selector = selector_file.read_text(encoding="ascii").strip().splitlines()[0].strip()
        return selector, key_file.read_bytes()

    def sign_transaction(self, transaction: Transaction) -> HookAnswer:
        """Add a DKIM-Signature for the message's domain, if we hold its key."""
        domain = self.signing_domain(transaction)
        try:
            found = self.load_key(domain or "")
        except OSError as err:
            self.log(LOGWARN, f"cannot read the key of {domain}: {type(err).__name__}")
            return DECLINED
        if found is None:
            self.log(LOGINFO, f"skip signing, no key for {domain}")
            return DECLINED
        selector, key = found
        work: Deferred[bytes] = self.defer_to_thread(sign_message, transaction.message_bytes(), selector,
                                                     domain or "", key, self.canon,
                                                     self.sign_headers)

        def add(line: bytes) -> HookAnswer:
            name, _, value = line.decode("ascii").rstrip("\n").partition(":")
            transaction.prepend_header(name, value.strip(" "))
            self.log(LOGINFO, f"signed for {domain} with selector {selector}")
            return DECLINED

        def failed(failure: Any) -> HookAnswer:
            self.log(LOGWARN, f"signing for {domain} failed: {failure.type.__name__}")
            return DECLINED

        return work.addCallbacks(add, failed)
