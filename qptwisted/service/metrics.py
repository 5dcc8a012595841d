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
from bisect import bisect_left
from collections import Counter as Tally
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

from qptwisted.core.codes import (
    DECLINED,
    DENY,
    DENY_CODES,
    DENY_DISCONNECT,
    DENYSOFT,
    DENYSOFT_DISCONNECT,
    Code,
)
from qptwisted.core.observer import TRANSACTION_HOOKS, reply_result

#: the environment variable prometheus_client reads for its multiprocess directory
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: plugin label of a refusal the engine made itself (message too big, bare LF, a broken spool)
ENGINE = "(engine)"
_FIRST_CODE = int(min(Code))
_CODES = int(max(Code)) - _FIRST_CODE + 1
_DECLINED, _DENY, _DENYSOFT = int(DECLINED), int(DENY), int(DENYSOFT)
_DENYSOFT_DISCONNECT = int(DENYSOFT_DISCONNECT)
assert int(DENY_DISCONNECT) < _DENYSOFT_DISCONNECT and {int(c) for c in DENY_CODES} == set(
    range(_DENY, _DENYSOFT_DISCONNECT + 1))
_FAST = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_VERDICT_LABELS = {code: code.name.lower() for code in Code}


class _Timing:
    """Observations of one histogram child not yet added to it: its sum and its bucket counts."""

    __slots__ = ("child", "sum", "counts", "dirty")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.sum = 0.0
        self.counts = [0] * (len(_FAST) + 1)  # the last bucket is +Inf
        self.dirty = False

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        self.counts[bisect_left(_FAST, seconds)] += 1  # the first bucket whose bound is >= seconds
        self.dirty = True

    def flush(self) -> None:
        """Add the observations to the histogram child.

        ``prometheus_client`` has no public call that adds pre-counted
        buckets; its histogram child keeps them as ``_sum`` and
        ``_buckets`` (non-cumulative values, in memory or in the
        multiprocess files alike), which ``tests/test_metrics.py`` checks against ``observe()``.
        """
        child = self.child
        child._sum.inc(self.sum)
        for index, count in enumerate(self.counts):
            if count:
                child._buckets[index].inc(count)
                self.counts[index] = 0
        self.sum = 0.0
        self.dirty = False


class _Flush:
    """A collector that yields nothing: collecting it adds the pending counts to the metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        """Flush."""
        self.metrics.flush()
        return ()


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
        self._open: dict[Any, _Connection] = {}
        # labelled children, looked up once: .labels() costs more than the increment
        self._per_hook: dict[tuple[str, str], tuple[_Timing, list[Any]]] = {}
        self._outcome: dict[tuple[Any, str, str], Any] = {}
        # counts not yet added to their metric (a dict increment costs a tenth of a locked one);
        # collecting the registry adds them, and so does the sampler every second
        self._pending: Tally[Any] = Tally()
        self._sampler: LoopingCall | None = None
        r.register(_Flush(self))  # before the metrics: whoever reads the registry reads the pending counts
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

    def _count(self, metric: Any, result: str, plugin: str) -> None:
        """``metric{result, plugin}`` += 1, through a cached child."""
        key = (metric, result, plugin)
        child = self._outcome.get(key)
        if child is None:
            child = self._outcome[key] = metric.labels(result, plugin)
        self._pending[child] += 1

    def flush(self) -> None:
        """Add the pending counts to the metrics (before each scrape, and every second)."""
        pending, self._pending = self._pending, Tally()
        for child, amount in pending.items():
            child.inc(amount)
        for timing, _ in self._per_hook.values():
            if timing.dirty:
                timing.flush()

    # -- the observer ------------------------------------------------------------
    def hook_answered(self, transaction: Any, plugin: str, hook: str, code: Code, seconds: float) -> None:
        """Count the verdict and its time; remember refusals and the deciding plugin."""
        # the hot path: codes are used as small ints (hashing an IntEnum runs Python code)
        entry = self._per_hook.get((plugin, hook))
        if entry is None:
            entry = self._per_hook[plugin, hook] = (_Timing(self.plugin_seconds.labels(plugin, hook)),
                                                    [None] * _CODES)
        slot = code - _FIRST_CODE
        counter = entry[1][slot]
        if counter is None:
            counter = entry[1][slot] = self.verdicts.labels(plugin, hook, _VERDICT_LABELS[code])
        self._pending[counter] += 1
        entry[0].observe(seconds)
        if code == _DECLINED or transaction is None:
            return
        state = self._open.get(transaction.connection)
        if state is None:
            return
        if state.message:
            state.decider = plugin
        if _DENY <= code <= _DENYSOFT_DISCONNECT and hook in TRANSACTION_HOOKS:
            state.refusal = (plugin, code == _DENYSOFT or code == _DENYSOFT_DISCONNECT)

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
            self._count(self.messages, result, plugin)
            self._count(self.transactions, result, plugin)
            self._pending[self.received_bytes] += transaction.data_size
        elif state.refusal is not None:
            plugin, soft = state.refusal
            self._count(self.transactions, "deferred" if soft else "refused", plugin)
        elif transaction.sender is not None:
            self._count(self.transactions, "abandoned", "")
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
        """Every ``interval`` seconds: sample the thread pool's backlog and busy threads, and flush.

        The flush matters to a prefork worker, whose counts the master reads
        from its files: they are at most ``interval`` seconds behind.
        """
        self.stop()

        def sample() -> None:
            self.flush()
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
        """Stop sampling (and flush)."""
        if self._sampler is not None and self._sampler.running:
            self._sampler.stop()
        self._sampler = None
        self.flush()


class CertificateCollector:
    """When the certificates in use expire: what ACME monitoring alerts on.

    ``engine()`` is the engine new connections get; every plugin of it with
    ``bundles`` (the ``tls`` plugin) reports each of its certificates, by its
    first name.
    """

    def __init__(self, engine: Callable[[], Any]) -> None:
        self.engine = engine

    def collect(self) -> Iterable[Metric]:
        """Read the certificates of the current engine."""
        family = GaugeMetricFamily("qpsmtpd_tls_certificate_expiry_timestamp_seconds",
                                   "when a certificate in use stops being valid (Unix time)",
                                   labels=["plugin", "name"])
        for plugin in getattr(self.engine(), "plugins", ()):
            for bundle in getattr(plugin, "bundles", ()):
                names = bundle.names() or ["-"]
                family.add_metric([plugin.plugin_name, names[0]],
                                  bundle.certificate.not_valid_after_utc.timestamp())
        yield family


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


__all__ = ["Metrics", "MetricsPage", "WorkersCollector", "CertificateCollector", "master_registry",
           "process_registry", "retire_worker", "clear_directory", "MULTIPROC_ENV", "ENGINE"]
