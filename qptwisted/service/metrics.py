"""Prometheus metrics: an engine observer that counts, and the page that serves them.

:class:`Metrics` is an :class:`~qptwisted.core.observer.Observer`: the
engine tells it about hook answers, connections, transactions, DNS lookups
and scans, and it updates ``prometheus_client`` metrics. Labels are bounded:
listener (local port), plugin, hook, verdict, result, record type, scanner;
never a sender, a recipient or a client address.

With ``--workers N`` every worker counts into ``prometheus_client``'s
multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by the master for its
workers) and the master serves their sum (:func:`master_registry`). When a
worker exits, :func:`retire_worker` removes its live gauges
(``mark_process_dead``) and folds its counters and histograms into an
archive file, so totals never go backwards when a worker is replaced and
the directory does not grow with every replacement.

:class:`MetricsPage` renders the registry with the library's exposition
(text or OpenMetrics, as the scraper asks) on the reactor thread, where the
numbers change, so a scrape never sees half an update.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import Request

from qptwisted.core.codes import DECLINED, DENY_CODES, DENYSOFT, DENYSOFT_DISCONNECT, Code
from qptwisted.core.observer import TRANSACTION_HOOKS, reply_result

#: the environment variable prometheus_client reads for its multiprocess directory
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: plugin label of a refusal the engine made itself (message too big, bare LF, a broken spool)
ENGINE = "(engine)"
_SOFT = frozenset({DENYSOFT, DENYSOFT_DISCONNECT})
_FAST = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_VERDICT_LABELS = {code: code.name.lower() for code in Code}


class _Connection:
    """What the metrics remember about one open connection."""

    __slots__ = ("listener", "message", "decider", "refusal")

    def __init__(self, listener: str) -> None:
        self.listener = listener
        self.message = False  # the current transaction's message arrived
        self.decider = ""  # the last plugin that answered (not DECLINED) since the message arrived
        self.refusal: tuple[str, bool] | None = None  # (plugin, soft) of the last refusal


class Metrics:
    """Counts what the engine reports into ``prometheus_client`` metrics (an engine observer)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections_open = Gauge("qpsmtpd_connections_open", "SMTP connections open now",
                                      ["listener"], registry=r, multiprocess_mode="livesum")
        self.connections = Counter("qpsmtpd_connections", "SMTP connections accepted",
                                   ["listener"], registry=r)
        self.connections_closed = Counter("qpsmtpd_connections_closed",
                                          "SMTP connections ended, by whether they used TLS",
                                          ["listener", "tls"], registry=r)
        self.transactions = Counter("qpsmtpd_transactions", "mail transactions ended, by result "
                                    "(accepted, refused, deferred, abandoned) and the plugin that decided",
                                    ["result", "plugin"], registry=r)
        self.messages = Counter("qpsmtpd_messages", "messages received whole, by the answer to them and the "
                                "plugin that gave it", ["result", "plugin"], registry=r)
        self.received_bytes = Counter("qpsmtpd_received_bytes", "octets of the messages received whole",
                                      registry=r)
        self.verdicts = Counter("qpsmtpd_plugin_verdicts", "plugin answers by plugin, hook and code",
                                ["plugin", "hook", "verdict"], registry=r)
        self.plugin_seconds = Histogram("qpsmtpd_plugin_seconds", "time a plugin took to answer a hook",
                                        ["plugin", "hook"], buckets=_FAST, registry=r)
        self.queue = Counter("qpsmtpd_queue", "answers of queue plugins", ["plugin", "verdict"], registry=r)
        self.queue_seconds = Histogram("qpsmtpd_queue_seconds", "time a queue plugin took to store or hand "
                                       "on a message", ["plugin"], buckets=_FAST, registry=r)
        self.dns = Counter("qpsmtpd_dns_lookups", "DNS lookups by record type and outcome (ok, empty, "
                           "timeout, error)", ["type", "result"], registry=r)
        self.dns_seconds = Histogram("qpsmtpd_dns_lookup_seconds", "time a DNS lookup took", ["type"],
                                     buckets=_FAST, registry=r)
        self.scans = Counter("qpsmtpd_scans", "content scans by scanner and result", ["scanner", "result"],
                             registry=r)
        self.scan_seconds = Histogram("qpsmtpd_scan_seconds", "time a content scan took", ["scanner"],
                                      buckets=_FAST, registry=r)
        self.threadpool_queue = Gauge("qpsmtpd_threadpool_queue", "blocking jobs waiting for a thread",
                                      registry=r, multiprocess_mode="livesum")
        self.threadpool_busy = Gauge("qpsmtpd_threadpool_busy_threads", "threads running a blocking job",
                                     registry=r, multiprocess_mode="livesum")
        self._open: dict[Any, _Connection] = {}
        # labelled children, looked up once: .labels() costs more than the increment
        self._verdict: dict[tuple[str, str, Code], Any] = {}
        self._seconds: dict[tuple[str, str], Any] = {}
        self._sampler: LoopingCall | None = None

    # -- the observer ------------------------------------------------------------
    def hook_answered(self, transaction: Any, plugin: str, hook: str, code: Code, seconds: float) -> None:
        """Count the verdict and its time; remember refusals and the deciding plugin."""
        key = (plugin, hook, code)
        counter = self._verdict.get(key)
        if counter is None:
            counter = self._verdict[key] = self.verdicts.labels(plugin, hook, _VERDICT_LABELS[code])
        counter.inc()
        timer = self._seconds.get(key[:2])
        if timer is None:
            timer = self._seconds[key[:2]] = self.plugin_seconds.labels(plugin, hook)
        timer.observe(seconds)
        if hook == "queue":
            self.queue.labels(plugin, _VERDICT_LABELS[code]).inc()
            self.queue_seconds.labels(plugin).observe(seconds)
        if code is DECLINED or transaction is None:
            return
        state = self._open.get(transaction.connection)
        if state is None:
            return
        if state.message:
            state.decider = plugin
        if code in DENY_CODES and hook in TRANSACTION_HOOKS:
            state.refusal = (plugin, code in _SOFT)

    def connection_opened(self, session: Any) -> None:
        """Count the connection under its listener (the local port)."""
        listener = str(session.connection.local_port)
        self._open[session.connection] = _Connection(listener)
        self.connections.labels(listener).inc()
        self.connections_open.labels(listener).inc()

    def message_received(self, session: Any) -> None:
        """From now on the plugin that answers decides the message."""
        state = self._open.get(session.connection)
        if state is not None:
            state.message, state.decider = True, ""

    def transaction_ended(self, session: Any, transaction: Any) -> None:
        """Count the transaction (and its message) by how it ended."""
        state = self._open.get(session.connection)
        if state is None:
            return
        if state.message:
            result = reply_result(session.last_reply)
            plugin = "" if result == "abandoned" else state.decider or ENGINE
            self.messages.labels(result, plugin).inc()
            self.transactions.labels(result, plugin).inc()
            self.received_bytes.inc(transaction.data_size)
        elif state.refusal is not None:
            plugin, soft = state.refusal
            self.transactions.labels("deferred" if soft else "refused", plugin).inc()
        elif transaction.sender is not None:
            self.transactions.labels("abandoned", "").inc()
        state.message, state.decider, state.refusal = False, "", None

    def connection_closed(self, session: Any) -> None:
        """The connection is no longer open."""
        state = self._open.pop(session.connection, None)
        if state is None:
            return
        self.connections_open.labels(state.listener).dec()
        self.connections_closed.labels(state.listener, "yes" if session.connection.tls else "no").inc()

    def dns_answered(self, kind: str, outcome: str, seconds: float) -> None:
        """Count a lookup and its time."""
        self.dns.labels(kind, outcome).inc()
        self.dns_seconds.labels(kind).observe(seconds)

    def scanned(self, scanner: str, result: str, seconds: float) -> None:
        """Count a scan and its time."""
        self.scans.labels(scanner, result).inc()
        self.scan_seconds.labels(scanner).observe(seconds)

    # -- sampled figures ---------------------------------------------------------
    def watch_threadpool(self, pool: Any, clock: IReactorTime, interval: float = 1.0) -> None:
        """Sample the thread pool's backlog and busy threads every ``interval`` seconds."""
        self.stop()

        def sample() -> None:
            team = getattr(pool, "_team", None)
            if team is None:  # not started, or a stand-in pool
                return
            stats = team.statistics()
            self.threadpool_queue.set(stats.backloggedWorkCount)
            self.threadpool_busy.set(stats.busyWorkerCount)

        self._sampler = LoopingCall(sample)
        self._sampler.clock = clock
        self._sampler.start(interval, now=True)

    def stop(self) -> None:
        """Stop sampling."""
        if self._sampler is not None and self._sampler.running:
            self._sampler.stop()
        self._sampler = None


def process_registry() -> CollectorRegistry:
    """A registry with this process's figures (CPU, memory, open files, GC, Python version)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


# -- workers -----------------------------------------------------------------------
class WorkersCollector:
    """The master's view of its workers: how many run, how many died, their CPU and memory."""

    def __init__(self, pids: Callable[[], Iterable[int]], deaths: Callable[[], int],
                 proc: str = "/proc") -> None:
        self.pids = pids
        self.deaths = deaths
        self.proc = proc
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def collect(self) -> Iterable[Metric]:
        """Read ``/proc`` of each live worker."""
        pids = list(self.pids())
        cpu = memory = 0.0
        for pid in pids:
            try:
                with open(f"{self.proc}/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                with open(f"{self.proc}/{pid}/statm") as statm:
                    resident = int(statm.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # it just exited
            cpu += (int(fields[11]) + int(fields[12])) / self._tick
            memory += resident * self._page
        yield GaugeMetricFamily("qpsmtpd_workers", "worker processes running", value=len(pids))
        yield CounterMetricFamily("qpsmtpd_worker_deaths", "workers that exited unasked and were replaced",
                                  value=self.deaths())
        yield GaugeMetricFamily("qpsmtpd_workers_cpu_seconds", "CPU time of the running workers (user and "
                                "system, summed)", value=cpu)
        yield GaugeMetricFamily("qpsmtpd_workers_resident_memory_bytes", "resident memory of the running "
                                "workers, summed", value=memory)


def master_registry(directory: str, workers: WorkersCollector | None = None) -> CollectorRegistry:
    """What the master serves: the workers' summed metrics, its own process figures, the pool's."""
    registry = process_registry()
    MultiProcessCollector(registry, path=directory)
    if workers is not None:
        registry.register(workers)  # type: ignore[arg-type]
    return registry


_ARCHIVE = "archive"


def retire_worker(directory: str, pid: int) -> None:
    """A worker exited: drop its live gauges and fold its counters and histograms into the archive.

    Run it on the reactor thread, where :class:`MetricsPage` renders: a
    scrape then sees the values either in the worker's file or in the
    archive, never in both.
    """
    mark_process_dead(pid, directory)
    for kind in ("counter", "histogram", "summary"):
        path = os.path.join(directory, f"{kind}_{pid}.db")
        if not os.path.exists(path):
            continue
        archive = MmapedDict(os.path.join(directory, f"{kind}_{_ARCHIVE}.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(path):
                total, _ = archive.read_value(key)
                archive.write_value(key, total + value, timestamp)
        finally:
            archive.close()
        os.unlink(path)


def clear_directory(directory: str) -> None:
    """Remove the metric files of an earlier run (the library wants a clean directory at start)."""
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.unlink(path)


# -- the page ----------------------------------------------------------------------
class MetricsPage(Resource):
    """``GET /metrics``: the registry in the text format (or OpenMetrics, if asked)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        """Render the metrics now, on the reactor thread."""
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"content-type", content_type.encode())
        request.setHeader(b"cache-control", b"no-store")
        return encoder(self.registry)  # type: ignore[no-any-return]


__all__ = ["Metrics", "MetricsPage", "WorkersCollector", "master_registry", "process_registry",
           "retire_worker", "clear_directory", "MULTIPROC_ENV", "ENGINE"]
