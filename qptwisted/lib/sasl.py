"""SASL helpers for auth plugins: CRAM-MD5 digests and the bridge to :mod:`twisted.cred`.

The engine speaks the SASL dialogue (PLAIN, LOGIN, CRAM-MD5) itself; a
checker plugin only compares credentials. ``auth/cred`` checks them against
a :class:`twisted.cred.portal.Portal` that an embedding application hands
over, either as the engine resource ``portal`` (``QPSMTPDService(resources=
{"portal": portal})``) or registered by name with :func:`register_portal`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from twisted.cred.portal import IRealm, Portal
from zope.interface import implementer

from qptwisted.interfaces import ISMTPAuthenticatedUser


def cram_md5_digest(secret: str, ticket: str) -> str:
    """The CRAM-MD5 response digest (hex) a client with ``secret`` sends for ``ticket``."""
    return hmac.new(secret.encode(), ticket.encode(), "md5").hexdigest()


def cram_md5_matches(secret: str, ticket: str, digest: str) -> bool:
    """True if ``digest`` proves knowledge of ``secret`` (constant-time compare)."""
    return hmac.compare_digest(cram_md5_digest(secret, ticket), digest.lower())


# -- twisted.cred bridge -----------------------------------------------------------------

@implementer(ISMTPAuthenticatedUser)
class AuthenticatedUser:
    """The avatar :func:`simple_portal`'s realm returns: just the avatar id."""

    def __init__(self, avatar_id: bytes | str) -> None:
        self.avatar_id = avatar_id


@implementer(IRealm)
class _Realm:
    def requestAvatar(self, avatar_id: Any, mind: Any,
                      *interfaces: Any) -> tuple[Any, Any, Callable[[], None]]:
        if ISMTPAuthenticatedUser in interfaces:
            return ISMTPAuthenticatedUser, AuthenticatedUser(avatar_id), lambda: None
        raise NotImplementedError("only ISMTPAuthenticatedUser is supported")


_portals: dict[str, Portal] = {}


def simple_portal(*checkers: Any) -> Portal:
    """A portal over ``checkers`` whose realm grants :class:`ISMTPAuthenticatedUser`."""
    return Portal(_Realm(), checkers)


def register_portal(portal: Portal, name: str = "default") -> None:
    """Make ``portal`` available to ``auth/cred`` under ``name`` (call before loading plugins)."""
    _portals[name] = portal


def unregister_portal(name: str = "default") -> None:
    """Forget a registered portal."""
    _portals.pop(name, None)


def get_portal(name: str = "default") -> Portal | None:
    """The portal registered under ``name``, or None."""
    return _portals.get(name)


__all__ = ["ISMTPAuthenticatedUser", "AuthenticatedUser", "cram_md5_digest", "cram_md5_matches",
           "simple_portal", "register_portal", "unregister_portal", "get_portal"]
