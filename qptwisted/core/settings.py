"""The engine's settings: every value the engine itself reads from the config directory, read once."""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass

from qptwisted.core.codes import LOGWARN
from qptwisted.core.config import Config


@dataclass(frozen=True, slots=True)
class Settings:
    """What the config directory says about the engine (plugins read their own files).

    Built once per engine by :meth:`from_config`; a reload (SIGHUP) builds a new
    engine and so new settings. The README's configuration table documents
    each file; ``docs/limits.md`` lists the bounds among them.
    """

    me: str
    greeting: str | None = None
    loglevel: int = int(LOGWARN)
    #: largest message in bytes (0: no limit); advertised as SIZE
    databytes: int = 0
    #: seconds a client may stay silent inside DATA
    timeout: float = 1200.0
    #: seconds a client may stay silent between commands
    command_timeout: float = 1200.0
    spool_dir: str = ""
    size_threshold: int = 1 << 20
    max_command_length: int = 512
    max_line_length: int = 1000
    max_header_size: int = 1 << 20
    max_recipients: int = 1000
    plugin_timeout: float = 120.0
    auth_results_id: str = ""
    #: bytes per second a message must arrive at, on top of ``timeout`` (0: no rate deadline)
    data_min_rate: int = 512
    #: seconds a whole session may last (0: no limit)
    max_session_time: float = 3600.0
    #: commands a connection may send between two accepted messages (0: no limit)
    max_commands: int = 2000
    #: connections at once on a listener (0: derived from the open-file limit)
    max_connections: int = 0
    #: connections at once from one IP address (0: no limit); qpsmtpd's ``max_conn_ip``
    max_conn_ip: int = 0
    #: mail transactions one connection may start (0: no limit); advertised as LIMITS MAILMAX
    max_messages: int = 0
    #: offer BINARYMIME (RFC 3030) besides CHUNKING
    binarymime: bool = True

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        """Read the settings; :class:`~qptwisted.core.config.ConfigError` names a bad file."""
        me = config.get("me") or socket.gethostname()
        timeout = config.get_float("timeout", 1200.0)
        return cls(
            me=me,
            greeting=config.get("smtpgreeting"),
            loglevel=config.get_level("loglevel", int(LOGWARN)),
            databytes=config.get_int("databytes", 0),
            timeout=timeout,
            command_timeout=config.get_float("timeoutsmtpd", timeout),
            spool_dir=config.get("spool_dir") or tempfile.gettempdir(),
            size_threshold=config.get_int("size_threshold", 1 << 20),
            max_command_length=config.get_int("max_command_length", 512),
            max_line_length=config.get_int("max_line_length", 1000),
            max_header_size=config.get_int("max_header_size", 1 << 20),
            max_recipients=config.get_int("max_recipients", 1000),
            plugin_timeout=config.get_float("plugin_timeout", 120.0),
            auth_results_id=config.get("me-auth-results") or me,
            data_min_rate=config.get_int("data_min_rate", 512),
            max_session_time=config.get_float("max_session_time", 3600.0),
            max_commands=config.get_int("max_commands", 2000),
            max_connections=config.get_int("max_connections", 0),
            max_conn_ip=config.get_int("max_conn_ip", 0),
            max_messages=config.get_int("max_messages", 0),
            binarymime=config.get_bool("binarymime", True),
        )
