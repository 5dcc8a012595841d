"""xclient: accept Postfix's XCLIENT from trusted hosts, so a front end can pass on the real client.

A front end that speaks SMTP itself (a Postfix with ``smtpd_proxy_filter``,
a qptwisted with ``queue/smtp-forward ... xclient``, a submission proxy)
connects from its own address; with XCLIENT it tells us who the client
really was. For clients in the trusted list EHLO offers ``XCLIENT NAME
ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT``; the command (Postfix's
XCLIENT_README) is ``XCLIENT attribute=value ...`` with xtext-encoded
values:

``ADDR``
    the client's IP address (IPv6 may be written ``IPV6:2001:db8::1``);
    ``[UNAVAILABLE]`` gives ``unknown``, as Postfix does.
``NAME``
    its verified host name; ``[UNAVAILABLE]``/``[TEMPUNAVAIL]``: none.
``PORT``, ``DESTADDR``, ``DESTPORT``
    its port, and the address and port it connected to.
``HELO``
    the name it sent in HELO/EHLO; it replaces the argument of the next
    HELO/EHLO, which the front end must send after XCLIENT.
``PROTO``
    ``SMTP`` or ``ESMTP``; kept in the connection note ``xclient_proto``
    (Received shows the protocol of the HELO/EHLO that follows).
``LOGIN``
    the SASL login name: the connection counts as authenticated
    (``auth_user``, mechanism ``XCLIENT``).

On success the connection starts afresh for the real client: its notes,
relay status, authentication and HELO are forgotten, the given attributes
set, the ``connect`` hooks run again (so ``dnsbl``, ``karma``, ``relay``
and friends judge the real client) and the answer is their refusal, or a
new ``220`` greeting. ``pre-connection`` does not run again. Replies for
errors follow Postfix: ``550 5.7.0`` for a client not trusted, ``503`` inside a
mail transaction, ``501`` for bad syntax or values. A trusted client may
send XCLIENT again later (the trust stays with the connection).

Arguments: the trusted hosts, IP addresses or CIDR networks (v4 and v6).

Config files: ``xclient_hosts``, one address or network per line, added to
the arguments.

config/plugins::

    xclient 127.0.0.1 10.0.0.0/8
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from qptwisted import (
    DECLINED,
    DONE,
    HOOKS,
    LOGINFO,
    OK,
    HookAnswer,
    HookResult,
    IPMatcher,
    Plugin,
    Transaction,
    __version__,
    arg,
)
from qptwisted.lib.smtpclient import xtext_decode

_ALLOWED = "xclient_allowed"
_HELO = "xclient_helo"
_UNAVAILABLE = ("[UNAVAILABLE]", "[TEMPUNAVAIL]")
_HOSTNAME = re.compile(r"(?=.{1,255}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?"
                       r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?)*\.?\Z")
_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT")
_CONNECT = HOOKS["connect"]


class XClientError(ValueError):
    """A bad attribute: the text of the 501."""


def _ip(value: str, attribute: str) -> str:
    text = value[5:] if value.upper().startswith("IPV6:") else value
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise XClientError(f"Bad {attribute} syntax: {value}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _port(value: str, attribute: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) > 65535:
        raise XClientError(f"Bad {attribute} syntax: {value}")
    return int(value)


def parse_attributes(words: list[str]) -> dict[str, str]:
    """``NAME=value`` words to {NAME: decoded value}; :class:`XClientError` says what is wrong."""
    attributes: dict[str, str] = {}
    for word in words:
        name, equals, value = word.partition("=")
        name = name.upper()
        if not equals or not value:
            raise XClientError("Error: attribute=value expected")
        if name not in _ATTRIBUTES:
            raise XClientError(f"Bad XCLIENT attribute name: {name}")
        value = xtext_decode(value)
        if not value.isprintable() or len(value) > 255:
            raise XClientError(f"Bad {name} syntax: {value!r}")
        attributes[name] = value
    return attributes


class XClient(Plugin):
    """XCLIENT from trusted front ends; see the module docstring."""

    name = "xclient"
    hosts: list[str] = arg.str(help="trusted front ends: IP addresses or CIDR networks", positional=True,
                               repeat=True)

    def register(self, *args: str) -> None:
        """Read the trusted list."""
        lines = [*self.hosts, *self.config_list("xclient_hosts")]
        entries = [entry.split("#", 1)[0].strip() for entry in lines]
        self.trusted = IPMatcher(entry for entry in entries if entry)

    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        notes = transaction.connection.notes
        if _ALLOWED not in notes:  # decided once, by the real peer: a second XCLIENT keeps it
            notes[_ALLOWED] = self.trusted.matches(transaction.connection.remote_ip)
        return DECLINED

    def hook_ehlo(self, transaction: Transaction, host: str, *args: str) -> HookAnswer:
        if transaction.connection.notes.get(_ALLOWED):
            transaction.notes.setdefault("capabilities", []).append("XCLIENT " + " ".join(_ATTRIBUTES))
        return DECLINED

    def hook_helo_parse(self, transaction: Transaction) -> HookAnswer:
        return self._hello_parser(transaction)

    def hook_ehlo_parse(self, transaction: Transaction) -> HookAnswer:
        return self._hello_parser(transaction)

    def _hello_parser(self, transaction: Transaction) -> HookAnswer:
        helo = transaction.connection.notes.get(_HELO)
        if not helo:
            return DECLINED
        parser: Callable[[str], list[str]] = lambda rest: [helo]  # noqa: E731
        return OK, parser

    def hook_unrecognized_command(self, transaction: Transaction, verb: str, rest: str) -> HookAnswer:
        if verb != "xclient":
            return DECLINED
        connection = transaction.connection
        if not connection.notes.get(_ALLOWED):
            self.log(LOGINFO, f"XCLIENT refused: {connection.remote_ip} is not in the trusted list")
            connection.respond(550, "Error: insufficient authorization", "5.7.0")
            return DONE
        if transaction.sender is not None:
            connection.respond(503, "Error: MAIL transaction in progress", "5.5.1")
            return DONE
        if not rest.split():
            connection.respond(501, "Syntax: XCLIENT attribute=value...", "5.5.4")
            return DONE
        try:
            self.apply(transaction, parse_attributes(rest.split()))
        except XClientError as err:
            connection.respond(501, str(err), "5.5.4")
            return DONE
        result = self.engine.hooks.run("connect", transaction)
        if isinstance(result, HookResult):
            return self._greet(transaction, result)
        return result.addCallback(lambda answer: self._greet(transaction, answer))

    def apply(self, transaction: Transaction, attributes: dict[str, str]) -> None:
        """Start the connection afresh as the client the attributes describe (validated first)."""
        connection = transaction.connection
        addr = attributes.get("ADDR")
        ip = None if addr is None else "unknown" if addr in _UNAVAILABLE else _ip(addr, "ADDR")
        name = attributes.get("NAME")
        if name is not None and name not in _UNAVAILABLE:
            looks_like_ip = True
            try:
                ipaddress.ip_address(name)
            except ValueError:
                looks_like_ip = False
            if looks_like_ip or not _HOSTNAME.match(name):
                raise XClientError(f"Bad NAME syntax: {name}")
        proto = attributes.get("PROTO")
        if proto is not None and proto.upper() not in ("SMTP", "ESMTP"):
            raise XClientError(f"Bad PROTO syntax: {proto}")
        port = None if "PORT" not in attributes else _port(attributes["PORT"], "PORT")
        destport = None if "DESTPORT" not in attributes else _port(attributes["DESTPORT"], "DESTPORT")
        destaddr = None if "DESTADDR" not in attributes else _ip(attributes["DESTADDR"], "DESTADDR")
        helo = attributes.get("HELO")
        login = attributes.get("LOGIN")
        self.log(LOGINFO, f"XCLIENT from {connection.remote_ip}: " +
                 " ".join(f"{key}={value}" for key, value in attributes.items()))
        connection.notes.clear()
        connection.notes[_ALLOWED] = True
        connection.auth_results.clear()
        connection.relay_client = False
        connection.early_talker = False
        connection.hello = None
        if ip is not None:
            connection.remote_ip = ip
            connection.remote_host = None
        if name is not None:
            connection.remote_host = None if name in _UNAVAILABLE else name
        if port is not None:
            connection.remote_port = port
        if destaddr is not None:
            connection.local_ip = destaddr
        if destport is not None:
            connection.local_port = destport
        connection.hello_host = None if helo in _UNAVAILABLE else helo
        if connection.hello_host:
            connection.notes[_HELO] = connection.hello_host
        if proto is not None:
            connection.notes["xclient_proto"] = proto.upper()
        connection.auth_user = None if login is None or login in _UNAVAILABLE else login
        connection.auth_mechanism = "XCLIENT" if connection.auth_user else None

    def _greet(self, transaction: Transaction, result: HookResult) -> Any:
        """Answer as a new connection would: the connect chain's refusal, or a greeting."""
        connection = transaction.connection
        if result.code is DONE:
            return DONE
        reply = _CONNECT.reply(result.code)
        if reply is not None:
            connection.respond(reply.code, result.message or reply.text, reply.enhanced)
            connection.disconnect()
            return DONE
        greeting = self.engine.settings.greeting or f"{self.me} ESMTP qptwisted {__version__} ready"
        connection.respond(220, greeting if "ESMTP" in greeting else f"{greeting} ESMTP", None)
        return DONE
