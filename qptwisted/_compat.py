"""Old import paths of qptwisted 0.1 (``qptwisted.policy``, ``qptwisted.testing_dns`` ...).

0.2 moved the modules into rooms (``core``, ``mail``, ``smtp``, ``service``,
``lib``, ``testing``). For one release the old flat names still import: a
meta path finder aliases each to its new module and warns once with a
:class:`DeprecationWarning` that names the new path. Removed in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

#: old module name -> new module name
MOVED = {
    "qptwisted.address": "qptwisted.mail.address",
    "qptwisted.codes": "qptwisted.core.codes",
    "qptwisted.config": "qptwisted.core.config",
    "qptwisted.connection": "qptwisted.mail.connection",
    "qptwisted.dataread": "qptwisted.smtp.receiver",
    "qptwisted.dns": "qptwisted.lib.dns",
    "qptwisted.engine": "qptwisted.core.engine",
    "qptwisted.headers": "qptwisted.mail.headers",
    "qptwisted.hooks": "qptwisted.core.hooks",
    "qptwisted.ipmatch": "qptwisted.lib.ipmatch",
    "qptwisted.loader": "qptwisted.core.loader",
    "qptwisted.plugin": "qptwisted.core.plugin",
    "qptwisted.policy": "qptwisted.lib.policy",
    "qptwisted.protocol": "qptwisted.smtp.protocol",
    "qptwisted.replies": "qptwisted.core.replies",
    "qptwisted.sasl": "qptwisted.lib.sasl",
    "qptwisted.server": "qptwisted.service.server",
    "qptwisted.session": "qptwisted.smtp.session",
    "qptwisted.smtpclient": "qptwisted.lib.smtpclient",
    "qptwisted.spool": "qptwisted.mail.spool",
    "qptwisted.store": "qptwisted.lib.store",
    "qptwisted.tap": "qptwisted.service.tap",
    "qptwisted.testing_dns": "qptwisted.testing.dns",
    "qptwisted.tls": "qptwisted.lib.tls",
    "qptwisted.transaction": "qptwisted.mail.transaction",
    "qptwisted.workers": "qptwisted.service.workers",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.target}; the old path goes away in qptwisted 0.3 "
                      "(import plugin API from qptwisted, helpers from qptwisted.lib)",
                      DeprecationWarning, stacklevel=4)
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias's spec on the real module: give it back its own
        module.__spec__ = self._spec


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any,
                  target: Any = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Make the old module names importable (idempotent)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
