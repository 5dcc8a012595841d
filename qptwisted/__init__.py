"""qptwisted: qpsmtpd, the plugin-driven SMTP server, on Twisted.

This module is the plugin author's and the embedder's whole surface: import
from ``qptwisted``, helpers from ``qptwisted.lib``, the test kit from
``qptwisted.testing``. The rooms behind it (``core``, ``mail``, ``smtp``,
``service``) are the engine's own and may change between releases.
"""

from qptwisted._version import __version__
from qptwisted.core.arguments import Argument, ArgumentError, arg
from qptwisted.core.codes import (
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
from qptwisted.core.config import Config, ConfigError, parse_bool
from qptwisted.core.engine import Engine
from qptwisted.core.hooks import HOOKS, HookSpec
from qptwisted.core.observer import Observer, report_scan
from qptwisted.core.plugin import Plugin
from qptwisted.core.replies import Reply
from qptwisted.interfaces import IConnectionControl, IQPPlugin, IQPPluginFactory
from qptwisted.lib.ipmatch import IPMatcher
from qptwisted.lib.policy import Policy, PolicyPlugin
from qptwisted.mail.address import NULL_SENDER, Address, AddressError
from qptwisted.mail.connection import Connection, TLSInfo
from qptwisted.mail.dsn import MessageDSN, RecipientDSN
from qptwisted.mail.headers import Headers
from qptwisted.mail.transaction import Transaction
from qptwisted.service.server import QPSMTPDService, SMTPFactory

from qptwisted import _compat  # isort: skip

_compat.install()

__all__ = [
    "__version__", "Address", "AddressError", "NULL_SENDER", "Argument", "ArgumentError", "arg",
    "Code", "HookAnswer", "HookResult", "HOOKS", "HookSpec", "LogLevel",
    "OK", "DENY", "DENYSOFT", "DENY_DISCONNECT", "DENYHARD", "DENYSOFT_DISCONNECT", "DECLINED",
    "DONE", "LOGEMERG", "LOGALERT", "LOGCRIT", "LOGERROR", "LOGWARN", "LOGNOTICE", "LOGINFO",
    "LOGDEBUG", "Config", "ConfigError", "parse_bool", "Connection", "TLSInfo", "Engine", "Headers",
    "IConnectionControl",
    "IQPPlugin", "IQPPluginFactory", "IPMatcher", "Plugin", "Policy", "PolicyPlugin", "QPSMTPDService",
    "Reply", "SMTPFactory", "Transaction", "MessageDSN", "RecipientDSN", "Observer", "report_scan",
]
