"""dont_require_anglebrackets: accept ``MAIL FROM:user@host`` without ``<>``.

Some broken clients send envelope addresses without angle brackets. This
plugin adds them in ``mail_pre`` and ``rcpt_pre``, so the address is then
parsed as usual (and still has to be valid). No arguments.

config/plugins::

    dont_require_anglebrackets
"""

from __future__ import annotations

from qptwisted import DECLINED, OK, HookAnswer, Plugin, Transaction


class DontRequireAnglebrackets(Plugin):
    """Wrap bare envelope addresses in angle brackets."""

    name = "dont_require_anglebrackets"
    strict_arguments = True

    @staticmethod
    def _wrap(path: str) -> HookAnswer:
        if path.startswith("<") and path.endswith(">"):
            return DECLINED
        return OK, f"<{path}>"

    def hook_mail_pre(self, transaction: Transaction, path: str, params: object) -> HookAnswer:
        return self._wrap(path)

    def hook_rcpt_pre(self, transaction: Transaction, path: str, params: object) -> HookAnswer:
        return self._wrap(path)
