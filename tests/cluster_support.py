"""Real daemons for the scaling tests: a private RabbitMQ node, Redis, HAProxy; all on 127.0.0.1.

Each starts on free loopback ports in its own temporary directory, is waited
for with bounded polling, and raises ``SkipTest`` with the reason when it is
not installed or will not start. :func:`shared_rabbitmq` starts one broker
per test process (it takes seconds) and stops it at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.net_support import PATIENCE, free_port, port_open, wait_for

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def _stop(process: subprocess.Popen[bytes] | None, how: int = signal.SIGTERM, wait: float = 20) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, how)
    except ProcessLookupError:
        return
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


class RabbitMQ:
    """A private RabbitMQ node: own node name, data directory, AMQP, distribution and epmd ports."""

    def __init__(self) -> None:
        server = RABBITMQ_BIN / "rabbitmq-server"
        epmd = shutil.which("epmd")
        if not server.exists() or epmd is None:
            raise unittest.SkipTest("RabbitMQ is not installed (Debian's rabbitmq-server)")
        self.root = Path(tempfile.mkdtemp(prefix="qpt-rabbitmq-"))
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        name = f"qpt{os.getpid()}x{self.port}@localhost"
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
            "log.console = true\nlog.console.level = warning\nlog.file = false\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        self.env = {**os.environ, "HOME": str(self.root), "RABBITMQ_NODENAME": name,
                    "RABBITMQ_BASE": str(self.root), "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(self.root / "log"), "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_DIST_PORT": str(self.dist_port),
                    "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
                    "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                    "RABBITMQ_PID_FILE": str(self.root / "pid"),
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"}
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.log = self.root / "server.log"
        # our own epmd, so that stopping it is stopping a process we started
        self.epmd = subprocess.Popen([epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.process: subprocess.Popen[bytes] | None = None
        try:
            wait_for(lambda: port_open(self.epmd_port), "epmd", 20)
            self.start()
        except BaseException:
            self.stop()
            raise

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        # await_startup needs the Erlang node registered with epmd first: ask until it is (bounded)
        deadline = time.monotonic() + PATIENCE
        while True:
            waited = self.ctl("await_startup", timeout=PATIENCE, check=False)
            if waited.returncode == 0 or time.monotonic() > deadline or self.process.poll() is not None:
                break
            time.sleep(0.5)
        if waited.returncode != 0 or not port_open(self.port):
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise unittest.SkipTest(f"RabbitMQ did not start: {waited.stdout[-300:]!r} "
                                    f"{waited.stderr[-500:]!r} {tail}")

    def ctl(self, *args: str, timeout: float = PATIENCE,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), *args], env=self.env, text=True,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {result.stdout} {result.stderr}")
        return result

    def stop_app(self) -> None:
        """Stop the broker application (connections drop; the node stays up)."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.ctl("shutdown", check=False, timeout=PATIENCE)
            _stop(self.process)
        _stop(self.epmd)
        shutil.rmtree(self.root, True)

    # -- reading what arrived (pika's blocking client; tests only) ---------------------
    def channel(self) -> Any:
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        return connection, connection.channel()

    def drain(self, queue: str) -> list[tuple[Any, bytes]]:
        """Every message in ``queue`` (acknowledged, so the queue is empty after): (properties, body)."""
        connection, channel = self.channel()
        out = []
        try:
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return out
                out.append((properties, body))
        finally:
            connection.close()

    def declare(self, queue: str, **arguments: Any) -> None:
        connection, channel = self.channel()
        try:
            channel.queue_delete(queue)
            channel.queue_declare(queue, durable=True, arguments=arguments or None)
        finally:
            connection.close()

    def count(self, queue: str) -> int:
        connection, channel = self.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.message_count)
        finally:
            connection.close()


_shared: dict[str, Any] = {}


def shared_rabbitmq() -> RabbitMQ:
    """One broker for the test process (a node takes seconds to start), stopped at exit."""
    if "skip" in _shared:
        raise unittest.SkipTest(_shared["skip"])
    if "rabbitmq" not in _shared:
        try:
            import pika  # noqa: F401
        except ImportError:
            _shared["skip"] = "pika is not installed (the amqp extra)"
            raise unittest.SkipTest(_shared["skip"]) from None
        try:
            _shared["rabbitmq"] = RabbitMQ()
        except unittest.SkipTest as skip:
            _shared["skip"] = str(skip.args[0])
            raise
        atexit.register(_shared["rabbitmq"].stop)
    broker: RabbitMQ = _shared["rabbitmq"]
    if broker.process is None or broker.process.poll() is not None:
        broker.start()
    return broker


class Redis:
    """A private redis-server on a free loopback port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise unittest.SkipTest("redis-server is not installed")
        self.port = free_port()
        self.root = tempfile.mkdtemp(prefix="qpt-redis-")
        self.process = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--dir", self.root],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        try:
            wait_for(lambda: port_open(self.port) or self.process.poll() is not None, "redis-server", 20)
        except AssertionError:
            self.stop()
            raise unittest.SkipTest("redis-server did not start") from None
        if self.process.poll() is not None:
            self.stop()
            raise unittest.SkipTest("redis-server could not start")

    def stop(self) -> None:
        _stop(self.process)
        shutil.rmtree(self.root, True)


class HAProxy:
    """HAProxy in TCP mode: round robin over ``servers``, PROXY v2 towards them, health checks LOCAL."""

    def __init__(self, servers: list[int], source: str = "127.0.0.2", check: bool = True) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(binary):
            raise unittest.SkipTest("HAProxy is not installed (Debian's haproxy)")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="qpt-haproxy-"))
        self.config = self.root / "haproxy.cfg"
        self.stats = self.root / "stats.sock"
        self.config.write_text(haproxy_config(self.port, servers, source, check, self.stats))
        self.process = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=open(self.root / "haproxy.log", "wb"), start_new_session=True)
        try:
            wait_for(lambda: port_open(self.port) or self.process.poll() is not None, "haproxy", 20)
        except AssertionError:
            self.stop()
            raise unittest.SkipTest("HAProxy did not start") from None
        if self.process.poll() is not None:
            log = (self.root / "haproxy.log").read_text(errors="replace")
            self.stop()
            raise unittest.SkipTest(f"HAProxy could not start: {log[-500:]}")

    def stop(self) -> None:
        _stop(self.process, signal.SIGUSR1)  # soft stop: let connections in flight finish
        shutil.rmtree(self.root, True)

    def server_up(self, name: str) -> bool:
        """True when HAProxy's health checks have ``name`` (``node1``, ...) in rotation."""
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(str(self.stats))
                sock.sendall(b"show stat\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
        except OSError:
            return False
        for line in answer.decode(errors="replace").splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[1] == name:
                return fields[17].startswith("UP")
        return False


def haproxy_config(port: int, servers: list[int], source: str = "127.0.0.2", check: bool = True,
                   stats: Path | None = None) -> str:
    """The HAProxy configuration the scaling docs show: TCP, round robin, ``send-proxy-v2``."""
    check_words = " check inter 500ms fall 2 rise 1 check-send-proxy" if check else ""
    lines = [
        "global",
        "    maxconn 4096",
        *([f"    stats socket {stats} mode 600 level user"] if stats is not None else []),
        "defaults",
        "    mode tcp",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    retries 2",
        "    option redispatch",
        "frontend smtp",
        f"    bind 127.0.0.1:{port}",
        "    default_backend qptwisted",
        "backend qptwisted",
        "    balance roundrobin",
        f"    source {source}",
    ]
    lines += [f"    server node{index} 127.0.0.1:{server} send-proxy-v2{check_words}"
              for index, server in enumerate(servers, 1)]
    return "\n".join(lines) + "\n"


TWISTD = "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"


class Node:
    """One qptwisted node: ``twistd qpsmtpd --workers N`` in its own process group (master and workers)."""

    def __init__(self, name: str, config: Path, port: int, workers: int = 2) -> None:
        self.name = name
        self.config = config
        self.port = port
        self.workers = workers
        self.log = config.parent / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "qpsmtpd", "--config", str(self.config),
                "--workers", str(self.workers), "--grace", "5",
                "--port", f"tcp:{self.port}:interface=127.0.0.1"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("RELAYCLIENT", None)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv, cwd=self.config.parent, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True)
        self.starts += 1
        wait_for(self.greets, f"node {self.name} to greet on port {self.port}")

    def greets(self) -> bool:
        """True once a worker answers a direct (untrusted, plain SMTP) connection with 220."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"node {self.name} exited: {self.log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.settimeout(5)
                ready = sock.recv(512).startswith(b"220")
                sock.sendall(b"QUIT\r\n")
                return ready
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL to master and workers at once: the machine died."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(PATIENCE)

    def stop(self) -> None:
        _stop(self.process)
