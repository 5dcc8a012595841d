"""Helpers for the tests that load the seed talks' ``config/plugins`` files (tests/fixtures/seeds/)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from qptwisted.lib.smtpclient import SMTPClient, connect_client

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "seeds"


def install(case: unittest.TestCase, talk: str, plugins: str = "plugins",
            replace: Mapping[str, str] | None = None,
            files: Mapping[str, str | list[str]] | None = None) -> Path:
    """A config directory whose ``plugins`` is the talk's file as printed, but for ``replace``.

    ``replace`` swaps printed text the test cannot use as it is (a slide's
    placeholder, ``/var/log/...``); ``files`` are the site's other config
    files. Returns the directory (in the test's temporary directory).
    """
    directory = Path(case.mktemp()).resolve() / "config"
    directory.mkdir(parents=True)
    text = (FIXTURES / talk / plugins).read_text()
    for printed, used in (replace or {}).items():
        text = text.replace(printed, used)
    (directory / "plugins").write_text(text)
    for name, value in (files or {}).items():
        lines = [value] if isinstance(value, str) else value
        (directory / name).write_text("".join(f"{line}\n" for line in lines))
    return directory


def set_environment(case: unittest.TestCase, **variables: str) -> None:
    """Environment variables for the test's duration (programs the server starts see them too)."""
    case.patch(os, "environ", {**os.environ, **variables})


_QMAIL_QUEUE = """#!{python}
# a stand-in for qmail-queue(8): the message on fd 0, the envelope on fd 1
import os, sys
out = {out!r}
message = b""
while chunk := os.read(0, 65536):
    message += chunk
envelope = b""
while chunk := os.read(1, 65536):
    envelope += chunk
number = len([name for name in os.listdir(out) if name.endswith(".message")])
with open(os.path.join(out, "%d.message" % number), "wb") as handle:
    handle.write(message)
with open(os.path.join(out, "%d.envelope" % number), "wb") as handle:
    handle.write(envelope)
"""


class QmailQueue:
    """A program with qmail-queue's interface that keeps each message in a directory (``QMAILQUEUE``)."""

    def __init__(self, case: unittest.TestCase) -> None:
        self.dir = Path(case.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        self.program = self.dir / "qmail-queue"
        self.program.write_text(_QMAIL_QUEUE.format(python=sys.executable, out=str(self.dir)))
        self.program.chmod(0o755)

    def queued(self) -> list[tuple[bytes, bytes]]:
        """``(message, envelope)`` of every message, in order."""
        count = len(list(self.dir.glob("*.message")))
        return [((self.dir / f"{n}.message").read_bytes(), (self.dir / f"{n}.envelope").read_bytes())
                for n in range(count)]


_CLAMSCAN = """#!{python}
# clamscan with the test's signature database (and without clamdscan's --config-file)
import os, sys
arguments = [a for a in sys.argv[1:] if not a.startswith("--config-file=")]
os.execv({clamscan!r}, [{clamscan!r}, "--database=" + {database!r}, *arguments])
"""


def clamav_on_path(case: unittest.TestCase, database: Path) -> None:
    """Put ``clamscan`` and ``clamdscan`` first on PATH: the real clamscan with ``database``."""
    clamscan = shutil.which("clamscan")
    if clamscan is None:
        raise unittest.SkipTest("ClamAV's clamscan is not installed (Debian package clamav)")
    directory = Path(case.mktemp()).resolve()
    directory.mkdir(parents=True)
    for name in ("clamscan", "clamdscan"):
        program = directory / name
        program.write_text(_CLAMSCAN.format(python=sys.executable, clamscan=clamscan, database=str(database)))
        program.chmod(0o755)
    set_environment(case, PATH=f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")


async def connect(port: int, helo: str = "client.example.org") -> SMTPClient:
    """An SMTP client that has said EHLO to 127.0.0.1:``port`` (qptwisted's own client library)."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return await connect_client(endpoint, reactor, helo)  # type: ignore[arg-type]


async def close(client: SMTPClient) -> None:
    """QUIT, and wait until the connection is gone (a test must leave the reactor clean)."""
    client.quit()
    await client.protocol.closed


def run(coroutine: Any) -> Deferred[Any]:
    """A coroutine as a Deferred, for trial."""
    return Deferred.fromCoroutine(coroutine)
