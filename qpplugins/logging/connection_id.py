"""logging/connection_id: log to stderr with the connection's id on each line.

Lines look like ``1234 [17] rcpt_ok: ...`` (process id, connection id);
lines not tied to a connection have ``[-]``. Since one process serves many
connections, this is what makes their lines tell apart.

Argument: ``[loglevel] N``, the highest level written (default ``loglevel``;
``LOGINFO`` and ``+1``/``-1`` relative to it work too).

config/logging::

    logging/connection_id loglevel 6
"""

from __future__ import annotations

from ._common import TaggedLogger


class ConnectionId(TaggedLogger):
    """stderr logger tagged with the connection id."""

    name = "logging/connection_id"
