"""queue/sendmail: hand accepted mail to the local MTA's ``sendmail`` command.

Arguments: ``[PATH] [config=DIR] [timeout=S]``. ``PATH`` defaults to
``/usr/sbin/sendmail`` (Postfix, Exim and Sendmail all install one);
``config=DIR`` passes ``-C DIR`` (a Postfix instance other than the
default); ``timeout`` (default 600 s) kills a program that does not finish.

The program runs as ``sendmail -i -f SENDER -- RCPT ...`` with the message
on its standard input, started with :meth:`reactor.spawnProcess` so the
reactor never waits on it; with Postfix it hands the message to
``postdrop``, and exit code 0 means the message is in Postfix's queue
(``maildrop/``, fsynced) — only then is ``250 Queued!`` sent. The exit code
is a sysexits(3) value: 65 (data format error), 67 (no such user) and 68
(no such host) are permanent (552); everything else, including 75
(temporary failure), a crash and the timeout, is temporary (452). What the
program prints is logged.

config/plugins::

    queue/sendmail
    queue/sendmail /usr/sbin/sendmail config=/etc/postfix-out timeout=120
"""

from __future__ import annotations

from qptwisted import Transaction, arg

from ._program import ProgramQueue

#: sysexits(3) codes a sendmail command uses
EXIT_CODES = {
    64: "usage error", 65: "data format error", 66: "cannot open input", 67: "no such user",
    68: "no such host", 69: "service unavailable", 70: "internal software error", 71: "system error",
    72: "critical OS file missing", 73: "cannot create output file", 74: "input/output error",
    75: "temporary failure", 76: "remote protocol error", 77: "permission denied",
    78: "configuration error",
}


class Sendmail(ProgramQueue):
    """Queue through ``sendmail -i -f SENDER -- RCPT ...``."""

    name = "queue/sendmail"
    default_path = "/usr/sbin/sendmail"
    config_dir: str = arg.str("", "passed as -C DIR (a Postfix instance other than the default)",
                              aliases=("config",))
    exit_codes = EXIT_CODES
    permanent = frozenset({65, 67, 68})
    refuser = "the local MTA"

    def arguments(self, transaction: Transaction) -> list[str]:
        """``[-C DIR] -i -f SENDER -- RCPT ...``; the null sender is ``<>``."""
        assert transaction.sender is not None
        config = ["-C", self.config_dir] if self.config_dir else []
        return [*config, "-i", "-f", transaction.sender.address or "<>", "--",
                *(rcpt.address for rcpt in transaction.recipients)]
