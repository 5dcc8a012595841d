"""Waiting on real servers in tests: free loopback ports, bounded polling, open ports."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

from qptwisted.testing.daemons import free_port

__all__ = ["PATIENCE", "free_port", "port_open", "stop_process", "wait_for"]

#: seconds a test waits for a server before it fails (never a measurement)
PATIENCE = 60.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = PATIENCE) -> Any:
    """Poll ``condition`` until it is true (bounded); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def stop_process(process: subprocess.Popen[bytes], timeout: float = PATIENCE) -> None:
    """SIGTERM, a bounded wait, then SIGKILL: a daemon a test started is gone afterwards."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
