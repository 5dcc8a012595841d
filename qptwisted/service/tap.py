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
        ["metrics", None, None, "serve Prometheus metrics at /metrics on this endpoint "
         "(e.g. tcp:9025; loopback unless an interface is named)"],
        ["web", None, None, "serve the live web view on this endpoint (e.g. tcp:8025; loopback unless an "
         "interface is named; may be the --metrics endpoint)"],
        ["web-password-file", None, None, "ask for HTTP basic authentication: a file of user:password lines"],
        ["web-keep", None, 100, "transactions the web view keeps", int],
    ]
    optFlags = [
        ["web-remote", None, "let clients outside the loopback network see the web view"],
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
    from qptwisted.core.observer import combine
    from qptwisted.service import monitoring
    from qptwisted.service.server import QPSMTPDService

    workers = options["workers"] > 0
    metrics, activity = (None, None) if workers else monitoring.observers(options)
    try:
        top = QPSMTPDService(options["config"], grace=options["grace"], observer=combine([metrics, activity]))
    except ConfigError as err:
        raise SystemExit(f"qpsmtpd: {err}") from None
    if workers:
        from qptwisted.service.workers import WorkerPool

        master = service.MultiService()  # the configuration was checked above; workers load their own
        pool = WorkerPool(options["workers"], options["ports"], options["config"], grace=options["grace"])
        pool.setServiceParent(master)
        monitoring.prefork_master(master, pool, options)
        return master
    for description in options["ports"]:
        top.listen(description)
    monitoring.single_process(top, options, metrics, activity)
    return top


def main(argv: list[str] | None = None) -> Any:
    """The ``qpsmtpd`` console script (see :mod:`qptwisted.service.cli`)."""
    from qptwisted.service.cli import main as cli_main

    return cli_main(argv)
