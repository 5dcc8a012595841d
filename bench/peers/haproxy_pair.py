#!/usr/bin/env python3
"""Two qptwisted nodes behind HAProxy, as one process tree for bench/run.

    haproxy_pair.py --port 2525 --node 40001:/path/node1/config --node 40002:/path/node2/config

Starts each node (``twistd qpsmtpd``, one process, ``proxy_hosts`` must
list 127.0.0.2) and HAProxy in TCP mode on 127.0.0.1:PORT, round robin,
``send-proxy-v2`` from source address 127.0.0.2 (the configuration of
docs/scaling.md, without health checks). SIGTERM stops all three.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(5)
            return sock.recv(64).startswith(b"220")
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--node", action="append", required=True, metavar="PORT:CONFIG")
    options = parser.parse_args()
    children: list[subprocess.Popen[bytes]] = []

    def stop(signum: int = 0, frame: object = None) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    servers = []
    for index, spec in enumerate(options.node, 1):
        port, _, config = spec.partition(":")
        children.append(subprocess.Popen([sys.executable, "-c", TWISTD, "-n", "--pidfile=", "qpsmtpd",
                                          "--config", config, "--port",
                                          f"tcp:{port}:interface=127.0.0.1:backlog=1024"],
                                         cwd=str(Path(config).parent)))
        servers.append(f"    server node{index} 127.0.0.1:{port} send-proxy-v2")
    haproxy_config = "\n".join([
        "global", "    maxconn 8000",
        "defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 60s",
        "    timeout server 60s",
        "frontend smtp", f"    bind 127.0.0.1:{options.port}", "    default_backend qptwisted",
        "backend qptwisted", "    balance roundrobin", "    source 127.0.0.2", *servers]) + "\n"
    config_file = Path(options.node[0].partition(":")[2]).parent.parent / "haproxy.cfg"
    config_file.write_text(haproxy_config)
    deadline = time.monotonic() + 60
    while not all(greets_direct(spec) for spec in options.node):
        if time.monotonic() > deadline or any(child.poll() is not None for child in children):
            stop()
        time.sleep(0.1)
    children.append(subprocess.Popen(["haproxy", "-db", "-f", str(config_file)]))
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    stop()
    return 0


def greets_direct(spec: str) -> bool:
    """A node answers a direct connection (not from 127.0.0.2, so plain SMTP) with 220."""
    return greets(int(spec.partition(":")[0]))


if __name__ == "__main__":
    sys.exit(main())
