"""logging/devnull: throw every log line away.

For benchmarks and tests; it answers the ``logging`` hook, so the built-in
logging is off too. No arguments.

config/logging::

    logging/devnull
"""

from __future__ import annotations

from qptwisted import OK, HookAnswer, Plugin


class DevNull(Plugin):
    """Discard log lines."""

    name = "logging/devnull"
    strict_arguments = True

    def hook_logging(self, transaction: object, level: int, hook: str | None, plugin: str | None,
                     message: str) -> HookAnswer:
        return OK
