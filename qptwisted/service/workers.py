"""Prefork workers: N processes accepting on one shared listening socket.

``twistd qpsmtpd --workers N`` (or ``qpsmtpd --workers N``) makes the twistd
process a *master* that serves no mail itself. It binds every ``--port``
(``tcp:`` and ``tcp6:`` endpoints), then starts N worker processes with
:meth:`reactor.spawnProcess`, handing each listening socket down as an
inherited file descriptor. A worker adopts the socket with
:meth:`IReactorSocket.adoptStreamPort` and builds its own engine, so the
kernel spreads connections over the workers and no byte passes the master.

The master

* forwards ``SIGHUP`` (reload) to every worker;
* on ``SIGTERM``/``SIGINT`` (twistd stops the reactor) sends ``SIGTERM`` to
  every worker and waits for them, killing stragglers after a bound;
* replaces a worker that exits while the pool is running (after a pause if it
  died young, so a broken configuration cannot fork-bomb the host);
* relays the workers' log lines into its own log, prefixed with their pid.

A worker that gets ``SIGTERM`` stops accepting and drains as a single
process does (:func:`qptwisted.service.server.drain`): ``421`` to sessions
between transactions, transactions in flight finish, what is left after
``grace`` seconds is cut. A worker also exits when its master disappears (its
stdin pipe reaches end of file).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application import service
from twisted.internet import abstract, error
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from qptwisted.service import notify
from qptwisted.service.server import DEFAULT_GRACE

_log = Logger(namespace="qptwisted.service.workers")

#: a worker that dies sooner than this after its start is replaced after a pause
_YOUNG = 2.0
_RESPAWN_PAUSE = 1.0
#: the first file descriptor number used for listening sockets in a worker
_FIRST_FD = 3


# -- endpoints ---------------------------------------------------------------------
def _split(description: str) -> list[str]:
    """Split a strports description on ``:``; a backslash escapes the next character."""
    fields, current, escaped = [], "", False
    for char in description:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append(current)
            current = ""
        else:
            current += char
    fields.append(current)
    return fields


def bind_listener(description: str) -> socket.socket:
    """Bind and listen on a ``tcp:``/``tcp6:`` endpoint description; return the socket.

    Supported: ``tcp:PORT``, ``tcp6:PORT`` and the keywords ``port``,
    ``interface`` and ``backlog`` (default 1024). A bare number is ``tcp:NUMBER``.
    ``systemd:domain=...:index=N`` (or ``name=NAME``) is the socket systemd
    handed over (socket activation), already bound.
    """
    fields = _split(description)
    if len(fields) == 1 and fields[0].isdigit():
        fields = ["tcp", fields[0]]
    kind = fields[0].lower()
    if kind == "systemd":
        return _inherited(description)
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"--workers supports tcp:, tcp6: and systemd: ports only, not {description!r}")
    options: dict[str, str] = {}
    positional: list[str] = []
    for field in fields[1:]:
        key, equals, value = field.partition("=")
        if equals:
            options[key] = value
        else:
            positional.append(field)
    port = int(options.get("port", positional[0] if positional else "0"))
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    interface = options.get("interface", "::" if family == socket.AF_INET6 else "")
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((interface, port))
        listener.listen(int(options.get("backlog", "1024")))
        listener.setblocking(False)  # shared by every worker; Twisted accepts in a loop
    except BaseException:
        listener.close()
        raise
    return listener


def _inherited(description: str) -> socket.socket:
    """The listening socket systemd handed over (socket activation: ``systemd:domain=INET:index=0``).

    Twisted's own parser finds it: it reads (and removes) systemd's variables
    when it is first imported, so nothing else can.
    """
    from twisted.internet import endpoints, reactor

    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except (IndexError, KeyError, ValueError) as err:
        raise ValueError(f"{description!r}: systemd handed over no such socket ({err!r})") from None
    listener = socket.socket(fileno=endpoint.fileno)  # type: ignore[attr-defined]
    listener.setblocking(False)
    return listener


# -- the master ----------------------------------------------------------------------
class _WorkerProcess(ProcessProtocol):
    """The master's view of one worker: relays its output, reports its end."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.pid: int | None = None
        self.started = time.monotonic()
        self.ended: Deferred[None] = Deferred()
        self._partial: dict[int, bytes] = {}

    def connectionMade(self) -> None:
        """Remember the pid (the transport knows it once the child runs)."""
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """Relay complete log lines of the worker into the master's log (web view events elsewhere)."""
        if childFD == self.pool.events_fd and self.pool.event_sink is not None:
            self.pool.event_sink(self.pid, data)
            return
        lines = (self._partial.pop(childFD, b"") + data).split(b"\n")
        if lines[-1]:
            self._partial[childFD] = lines[-1]
        for line in lines[:-1]:
            if line:
                _log.info("[worker {pid}] {line}", pid=self.pid, line=line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        """Tell the pool, which may start a replacement."""
        self.pool._ended(self, reason)
        self.ended.callback(None)


class WorkerPool(service.Service):
    """The master: binds the listeners, runs ``count`` workers and keeps them running.

    ``worker_args`` and ``worker_env`` are added to each worker's command line
    and environment; each of ``exit_hooks`` is called with the pid of a worker
    that exited (metrics fold its files); ``deaths`` counts the workers that
    exited unasked.
    """

    def __init__(self, count: int, ports: Sequence[str], config_dir: str | None = None,
                 grace: float = DEFAULT_GRACE, reactor: Any = None, worker_args: Sequence[str] = (),
                 worker_env: Mapping[str, str] | None = None) -> None:
        if count < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.count = count
        self.ports = list(ports)
        self.config_dir = config_dir
        self.grace = grace
        self._reactor = reactor
        self.sockets: list[socket.socket] = []
        self.workers: dict[int, _WorkerProcess] = {}
        self.spawned = 0
        self.deaths = 0
        self.worker_args = list(worker_args)
        self.worker_env = dict(worker_env or {})
        self.exit_hooks: list[Callable[[int], object]] = []
        #: gets (pid, bytes) a worker writes on its web view pipe; None: the workers keep no activity
        self.event_sink: Callable[[int | None, bytes], object] | None = None
        self.events_fd: int | None = None
        self._stopping = False
        self._previous: dict[int, Any] = {}

    @property
    def reactor(self) -> Any:
        """The reactor (the global one unless another was given)."""
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) each listener is bound to (useful with port 0)."""
        return [sock.getsockname()[:2] for sock in self.sockets]

    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        return sorted(self.workers)

    # service life
    def privilegedStartService(self) -> None:
        """Bind before twistd drops privileges (``--uid``), so port 25 works."""
        super().privilegedStartService()
        self._bind()

    def _bind(self) -> None:
        if not self.sockets:
            self.sockets = [bind_listener(description) for description in self.ports]

    def startService(self) -> None:
        """Bind (if not done yet), start the workers, forward SIGHUP."""
        super().startService()
        self._stopping = False
        self._bind()
        for host, port in self.addresses():
            _log.info("master {pid}: listening on {host}:{port} for {count} workers",
                      pid=os.getpid(), host=host, port=port, count=self.count)
        if hasattr(signal, "SIGHUP"):
            try:
                self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
            except ValueError:  # not the main thread
                pass
        for _ in range(self.count):
            self.spawn()

    def stopService(self) -> Deferred[Any]:
        """SIGTERM every worker; fires when all have exited (stragglers are killed)."""
        super().stopService()
        self._stopping = True
        notify.stopping()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        waits = [worker.ended for worker in self.workers.values()]
        self.signal_all(signal.SIGTERM)
        killer = self.reactor.callLater(self.grace + 5.0, self.signal_all, signal.SIGKILL)

        def done(result: object) -> object:
            if killer.active():
                killer.cancel()
            for sock in self.sockets:
                sock.close()
            self.sockets = []
            return result

        return DeferredList(waits).addBoth(done)

    def _on_hup(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self._reload)

    def _reload(self) -> None:
        notify.reloading()
        self.signal_all(signal.SIGHUP)
        notify.ready()  # each worker reloads on its own; a broken configuration keeps the old one

    # workers
    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every running worker."""
        for pid in list(self.workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def spawn(self) -> _WorkerProcess:
        """Start one worker with every listening socket as an inherited descriptor."""
        worker = _WorkerProcess(self)
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        args = [sys.executable, "-m", "qptwisted.service.workers", "--grace", repr(self.grace),
                *self.worker_args]
        for index, sock in enumerate(self.sockets):
            fd = _FIRST_FD + index
            child_fds[fd] = sock.fileno()
            args += ["--listen", f"{fd}:{int(sock.family)}"]
        if self.event_sink is not None:
            self.events_fd = _FIRST_FD + len(self.sockets)
            child_fds[self.events_fd] = "r"
            args += ["--web-events", str(self.events_fd)]
        if self.config_dir:
            args += ["--config", self.config_dir]
        env = notify.clean_environment(dict(os.environ))  # systemd talks to the master only
        env.update(self.worker_env)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        self.reactor.spawnProcess(worker, sys.executable, args, env=env, childFDs=child_fds)
        assert worker.pid is not None
        self.workers[worker.pid] = worker
        self.spawned += 1
        _log.info("started worker {pid}", pid=worker.pid)
        return worker

    def _ended(self, worker: _WorkerProcess, reason: Failure) -> None:
        if worker.pid is not None:
            self.workers.pop(worker.pid, None)
            for hook in self.exit_hooks:
                try:
                    hook(worker.pid)
                except Exception:
                    _log.failure("exit hook for worker {pid} failed", pid=worker.pid)
        if self._stopping:
            _log.info("worker {pid} stopped", pid=worker.pid)
            return
        self.deaths += 1
        _log.warn("worker {pid} died ({why}); starting a replacement",
                  pid=worker.pid, why=reason.getErrorMessage())
        young = time.monotonic() - worker.started < _YOUNG
        self.reactor.callLater(_RESPAWN_PAUSE if young else 0, self._replace)

    def _replace(self) -> None:
        if not self._stopping and len(self.workers) < self.count:
            self.spawn()


# -- a worker ---------------------------------------------------------------------
class _ParentWatch(abstract.FileDescriptor):
    """Stops the reactor when the master's end of our stdin pipe closes."""

    def __init__(self, reactor: Any, fd: int = 0) -> None:
        super().__init__(reactor)
        self.fd = fd

    def fileno(self) -> int:
        """The watched descriptor."""
        return self.fd

    def doRead(self) -> Any:
        """Read and discard; end of file means the master is gone."""
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        return None if data else error.ConnectionDone()

    def connectionLost(self, reason: Failure) -> None:
        """The master went away: stop serving."""
        super().connectionLost(reason)
        if self.reactor.running:  # type: ignore[attr-defined]
            _log.warn("master went away; stopping")
            self.reactor.stop()  # type: ignore[attr-defined]


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a worker process (``python -m qptwisted.service.workers``)."""
    parser = argparse.ArgumentParser(prog="qptwisted.service.workers")
    parser.add_argument("--listen", action="append", default=[], metavar="FD:FAMILY",
                        help="an inherited listening socket and its address family")
    parser.add_argument("--config", default=None)
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE)
    parser.add_argument("--metrics", action="store_true",
                        help="count metrics into the master's PROMETHEUS_MULTIPROC_DIR")
    parser.add_argument("--web-events", type=int, default=None, metavar="FD",
                        help="keep the web view's activity and send it to the master on this pipe")
    options = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from qptwisted.core.config import ConfigError
    from qptwisted.service.monitoring import worker_observer
    from qptwisted.service.server import QPSMTPDService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout, timeFormat="")],
                                     redirectStandardIO=False)
    observer, metrics = worker_observer(options.metrics)
    activity = None
    if options.web_events is not None:
        from qptwisted.core.observer import combine
        from qptwisted.service.web.activity import Activity
        from qptwisted.service.web.relay import PipeSubscriber

        activity = Activity(reactor)
        activity.subscribe(PipeSubscriber(options.web_events))
        observer = combine([observer, activity])
    try:
        top = QPSMTPDService(options.config, grace=options.grace, observer=observer)
    except ConfigError as err:
        print(f"qpsmtpd worker: {err}", file=sys.stderr)
        return 2
    ports: list[IListeningPort] = []
    for spec in options.listen:
        fd, _, family = spec.partition(":")
        os.set_blocking(int(fd), False)
        ports.append(reactor.adoptStreamPort(int(fd), int(family), top.factory))  # type: ignore[attr-defined]
        os.close(int(fd))  # adoptStreamPort duplicated it
    os.set_blocking(0, False)
    watch = _ParentWatch(reactor)
    watch.startReading()

    def stop() -> Deferred[None]:
        # stop accepting first; the service then drains, closes the engine and stops its threads
        for port in ports:
            port.stopListening()
        stopped = top.stopService()
        if metrics is not None:
            stopped.addBoth(lambda result: (metrics.stop(), result)[1])  # the last counts reach the files
        return stopped

    reactor.addSystemEventTrigger("before", "shutdown", stop)  # type: ignore[attr-defined]
    reactor.callWhenRunning(top.startService)  # type: ignore[attr-defined]
    if metrics is not None:
        metrics.watch_threadpool(top.threadpool, reactor)
    if activity is not None:
        activity.start()
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
