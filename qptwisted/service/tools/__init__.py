"""The tools beside the daemon, run as ``qpsmtpd TOOL ...`` (registered in ``qptwisted.service.cli.TOOLS``).

- ``qpsmtpd karma``: list, show and edit the karma history (:mod:`.karma`);
- ``qpsmtpd greylist``: list the greylisting triplets, whitelist clients (:mod:`.greylist`);
- ``qpsmtpd log-summary``: per plugin, what it refused, from ``logging/json`` logs (:mod:`.logsummary`).
"""

from __future__ import annotations

from collections.abc import Sequence


def karma(argv: Sequence[str]) -> int:
    """``qpsmtpd karma ...`` (:func:`qptwisted.service.tools.karma.main`)."""
    from qptwisted.service.tools.karma import main

    return main(argv)


def greylist(argv: Sequence[str]) -> int:
    """``qpsmtpd greylist ...`` (:func:`qptwisted.service.tools.greylist.main`)."""
    from qptwisted.service.tools.greylist import main

    return main(argv)


def log_summary(argv: Sequence[str]) -> int:
    """``qpsmtpd log-summary ...`` (:func:`qptwisted.service.tools.logsummary.main`)."""
    from qptwisted.service.tools.logsummary import main

    return main(argv)
