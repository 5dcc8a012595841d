"""Putting the operations pieces together: metrics, the web view, systemd readiness.

:func:`single_process` and :func:`prefork_master` add to the service tree
``twistd qpsmtpd`` builds what ``--metrics``, ``--web`` and systemd ask for;
:func:`worker_observer` is what a prefork worker counts with.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from qptwisted.core.observer import Observer, combine
from qptwisted.service import notify

_log = Logger(namespace="qptwisted.service.monitoring")


class _Periodic(service.Service):
    """Starts and stops the periodic parts: the web view's tick, the thread-pool sampler."""

    def __init__(self, metrics: Any, activity: Any, threadpool: Any, clock: Any) -> None:
        self.metrics = metrics
        self.activity = activity
        self.threadpool = threadpool
        self.clock = clock

    def startService(self) -> None:
        """Start ticking and sampling."""
        super().startService()
        if self.activity is not None:
            self.activity.start()
        if self.metrics is not None and self.threadpool is not None:
            self.metrics.watch_threadpool(self.threadpool, self.clock)

    def stopService(self) -> Any:
        """Stop them."""
        if self.activity is not None:
            self.activity.stop()
        if self.metrics is not None:
            self.metrics.stop()
        return super().stopService()


def observers(options: Any, clock: Any = None) -> tuple[Any, Any]:
    """``(metrics, activity)`` as the options ask (either may be None)."""
    metrics = activity = None
    if options.get("metrics"):
        import prometheus_client

        from qptwisted.service.metrics import Metrics, process_registry

        prometheus_client.disable_created_metrics()  # half the lines, nothing a dashboard reads
        metrics = Metrics(process_registry())
    if options.get("web"):
        from qptwisted.service.web.activity import Activity

        if clock is None:
            from twisted.internet import reactor as clock
        activity = Activity(clock, keep=options.get("web-keep") or 100)
    return metrics, activity


def single_process(top: Any, options: Any, metrics: Any, activity: Any) -> None:
    """Add the HTTP listeners, the periodic work and the systemd notifier to a one-process server.

    ``top`` is the :class:`~qptwisted.service.server.QPSMTPDService` built
    with ``combine([metrics, activity])`` as its observer.
    """
    from twisted.internet import reactor

    from qptwisted.service.http import build_view, http_services

    view = None
    if activity is not None:
        from qptwisted.service.web import web_resources

        view = build_view(web_resources(activity), options.get("web-password-file"))
    page = None
    if metrics is not None:
        from qptwisted.service.metrics import CertificateCollector, MetricsPage

        metrics.registry.register(CertificateCollector(lambda: top.engine))
        page = MetricsPage(metrics.registry)
    for listener in http_services(options.get("metrics"), page, options.get("web"), view,
                                  bool(options.get("web-remote"))):
        listener.setServiceParent(top)
    _Periodic(metrics, activity, top.threadpool, reactor).setServiceParent(top)
    notify.Notifier("accepting mail").setServiceParent(top)


def worker_observer(metrics: bool) -> tuple[Observer | None, Any]:
    """A prefork worker's observer: its metrics count into the master's multiprocess directory."""
    if not metrics:
        return None, None
    import prometheus_client

    from qptwisted.service.metrics import Metrics

    prometheus_client.disable_created_metrics()
    counter = Metrics()
    return combine([counter]), counter


def metrics_directory() -> tuple[str, bool]:
    """Where the workers write their metrics, and whether we made it (and so remove it).

    ``$PROMETHEUS_MULTIPROC_DIR`` if the administrator set it, else a
    ``metrics`` directory in systemd's ``$RUNTIME_DIRECTORY``, else a new
    temporary directory. Files of an earlier run are removed.
    """
    from qptwisted.service.metrics import MULTIPROC_ENV, clear_directory

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        clear_directory(given)
        return given, False
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        path = os.path.join(runtime, "metrics")
        os.makedirs(path, mode=0o700, exist_ok=True)
        clear_directory(path)
        return path, True
    return tempfile.mkdtemp(prefix="qpsmtpd-metrics-"), True


def prefork_master(master: Any, pool: Any, options: Any) -> None:
    """Add metrics (the workers' sum), the web view (the workers' activity) and the systemd notifier."""
    from twisted.internet import reactor

    from qptwisted.service.http import build_view, http_services

    page = view = activity = None
    if options.get("metrics"):
        from qptwisted.service.metrics import (
            MULTIPROC_ENV,
            MetricsPage,
            WorkersCollector,
            master_registry,
            retire_worker,
        )

        path, owned = metrics_directory()
        if owned:  # after the workers are gone
            reactor.addSystemEventTrigger("after", "shutdown", shutil.rmtree, path, True)  # type: ignore[attr-defined]
        pool.worker_env[MULTIPROC_ENV] = path
        pool.worker_args.append("--metrics")
        pool.exit_hooks.append(lambda pid: retire_worker(path, pid))
        page = MetricsPage(master_registry(path, WorkersCollector(pool.pids, lambda: pool.deaths)))
    if options.get("web"):
        from qptwisted.service.web import web_resources
        from qptwisted.service.web.relay import WorkersActivity

        activity = WorkersActivity(reactor, keep=options.get("web-keep") or 100)
        pool.event_sink = activity.receive
        pool.exit_hooks.append(activity.forget)
        view = build_view(web_resources(activity), options.get("web-password-file"))
    for listener in http_services(options.get("metrics"), page, options.get("web"), view,
                                  bool(options.get("web-remote"))):
        listener.setServiceParent(master)
    _Periodic(None, activity, None, reactor).setServiceParent(master)
    notify.Notifier(f"accepting mail with {pool.count} workers").setServiceParent(master)


__all__ = ["observers", "single_process", "prefork_master", "worker_observer", "metrics_directory"]
