"""DNS for plugins: the engine's resolver (``self.engine.resolver``) and its errors.

Every lookup returns a Deferred of a list: NXDOMAIN and "no data" are an
empty list; a timeout or a server failure raises :class:`DNSTempError`,
which a plugin answers with "try again later". Blocking libraries on the
engine's thread pool get a dnspython resolver on the same nameservers from
:meth:`Resolver.dnspython`. See :mod:`qptwisted.core.resolver` for the
configuration files (``resolvers``, ``dns_timeout``, ``dns_max_in_flight``).
"""

from qptwisted.core.resolver import (
    DNSServerFailure,
    DNSTempError,
    DNSTimeout,
    Resolver,
    parse_server,
    reverse_name,
    system_servers,
)

__all__ = ["DNSServerFailure", "DNSTempError", "DNSTimeout", "Resolver", "parse_server", "reverse_name",
           "system_servers"]
