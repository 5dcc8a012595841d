"""``twistd qpsmtpd``: command-line options and the service they make."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.python import usage

DEFAULT_PORT = "tcp:2525:interface=127.0.0.1"


class Options(usage.Options):
    """Options of ``twistd qpsmtpd`` and of the ``qpsmtpd`` command."""

    synopsis = "[options]"
    optParameters = [
        ["config", "c", None, "qpsmtpd-style config directory (default ./config, else the sample)"],
        ["workers", "w", 0, "prefork N worker processes sharing the listening sockets "
         "(tcp:/tcp6: ports; 0 = serve in this process)", int],
        ["grace", None, 30.0, "seconds transactions in flight may take to finish on SIGTERM", float],
    ]
    longdesc = ("Runs the qptwisted SMTP server. Listeners are endpoint strings, e.g. "
                f"--port {DEFAULT_PORT} (the default) or --port tcp6:25; repeat --port for more.")

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []

    def opt_port(self, description: str) -> None:
        """Listen on an endpoint (strports syntax); repeatable."""
        self["ports"].append(description)

    opt_p = opt_port

    def postOptions(self) -> None:
        """Default to 127.0.0.1:2525."""
        if not self["ports"]:
            self["ports"] = [DEFAULT_PORT]


def makeService(options: Options) -> service.MultiService:
    """Build the server; a bad configuration exits with its message, no traceback."""
    from qptwisted.core.config import ConfigError
    from qptwisted.service.server import QPSMTPDService

    try:
        top = QPSMTPDService(options["config"], grace=options["grace"])
    except ConfigError as err:
        raise SystemExit(f"qpsmtpd: {err}") from None
    if options["workers"] > 0:
        from qptwisted.service.workers import WorkerPool

        master = service.MultiService()  # the configuration was checked above; workers load their own
        WorkerPool(options["workers"], options["ports"], options["config"],
                   grace=options["grace"]).setServiceParent(master)
        return master
    for description in options["ports"]:
        top.listen(description)
    return top


def main(argv: list[str] | None = None) -> Any:
    """The ``qpsmtpd`` console script (see :mod:`qptwisted.service.cli`)."""
    from qptwisted.service.cli import main as cli_main

    return cli_main(argv)
