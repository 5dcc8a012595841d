"""qptwisted: qpsmtpd, the plugin-driven SMTP server, on Twisted.

The public API for plugin authors and embedders is re-exported here.
"""

from qptwisted._version import __version__  # noqa: E402

from qptwisted.mail.address import NULL_SENDER, Address, AddressError  # noqa: E402
from qptwisted.core.codes import (  # noqa: E402
    DECLINED,
    DENY,
    DENY_DISCONNECT,
    DENYHARD,
    DENYSOFT,
    DENYSOFT_DISCONNECT,
    DONE,
    LOGALERT,
    LOGCRIT,
    LOGDEBUG,
    LOGEMERG,
    LOGERROR,
    LOGINFO,
    LOGNOTICE,
    LOGWARN,
    OK,
    Code,
    HookAnswer,
    HookResult,
    LogLevel,
)
from qptwisted.core.config import Config, ConfigError  # noqa: E402
from qptwisted.mail.connection import Connection, TLSInfo  # noqa: E402
from qptwisted.core.engine import Engine  # noqa: E402
from qptwisted.core.interfaces import IQPPlugin, IQPPluginFactory  # noqa: E402
from qptwisted.lib.ipmatch import IPMatcher  # noqa: E402
from qptwisted.core.plugin import Plugin  # noqa: E402
from qptwisted.lib.policy import Policy, PolicyPlugin  # noqa: E402
from qptwisted.service.server import QPSMTPDService, SMTPFactory  # noqa: E402
from qptwisted.mail.transaction import Transaction  # noqa: E402

__all__ = [
    "__version__", "Address", "AddressError", "NULL_SENDER", "Code", "HookAnswer", "HookResult", "LogLevel",
    "OK", "DENY", "DENYSOFT", "DENY_DISCONNECT", "DENYHARD", "DENYSOFT_DISCONNECT", "DECLINED",
    "DONE", "LOGEMERG", "LOGALERT", "LOGCRIT", "LOGERROR", "LOGWARN", "LOGNOTICE", "LOGINFO",
    "LOGDEBUG", "Config", "ConfigError", "Connection", "TLSInfo", "Engine", "IQPPlugin",
    "IQPPluginFactory", "IPMatcher", "Plugin", "Policy", "PolicyPlugin", "QPSMTPDService", "SMTPFactory",
    "Transaction",
]

from qptwisted import _compat  # noqa: E402

_compat.install()
