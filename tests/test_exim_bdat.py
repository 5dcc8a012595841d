"""A real BDAT client: Exim's smtp transport (CHUNKING) delivering to the real qptwisted server.

Exim is the binary ``.ci/install`` unpacks (Postfix's smtp client does not
speak BDAT). It runs as a delivering client: a copy of the binary without
the setuid bit, ``LD_LIBRARY_PATH`` into the unpacked tree, a private
``-C`` configuration with ``exim_path`` pointing at the copy, and
``-odf`` (deliver in the foreground). Exim's log marks a delivery made with
CHUNKING with ``K``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time

from twisted.trial import unittest

from qptwisted.testing import write_config
from tests.plugins.queue_support import UNPACKED_EXIM, world_dir
from tests.test_e2e import PATIENCE, Server

EXIM_USER = "Debian-exim"
MAILDIR = "queue/maildir spool/maildir %d/%l"


class Exim:
    """A private, delivering Exim that sends every message to qptwisted on ``port`` (BDAT when offered)."""

    def __init__(self, case: unittest.TestCase, port: int) -> None:
        binary = UNPACKED_EXIM / "usr/sbin/exim4"
        if not binary.exists():
            raise unittest.SkipTest("Exim is not unpacked (run .ci/install)")
        if os.geteuid() != 0:
            raise unittest.SkipTest("a private delivering Exim needs root")
        try:
            user = pwd.getpwnam(EXIM_USER)
        except KeyError:
            raise unittest.SkipTest(f"no {EXIM_USER} user for Exim to run as") from None
        self.root = world_dir("qpt-exim-")
        case.addCleanup(shutil.rmtree, self.root, True)
        self.binary = self.root / "exim"
        shutil.copyfile(binary, self.binary)
        self.binary.chmod(0o755)  # no setuid: the re-executed delivery process keeps LD_LIBRARY_PATH
        for sub in ("spool", "log"):
            (self.root / sub).mkdir()
            os.chown(self.root / sub, user.pw_uid, user.pw_gid)
        self.config = self.root / "exim.conf"
        self.config.write_text(f"""
spool_directory = {self.root}/spool
log_file_path = {self.root}/log/%slog
primary_hostname = client.test
exim_user = {EXIM_USER}
exim_group = {EXIM_USER}
exim_path = {self.binary}
trusted_users = root
keep_environment = LD_LIBRARY_PATH
begin routers
qptwisted:
  driver = manualroute
  route_list = * 127.0.0.1::{port} byname
  transport = to_qptwisted
  self = send
begin transports
to_qptwisted:
  driver = smtp
  hosts_try_chunking = *
  allow_localhost
begin retry
* * F,1h,1m
""")
        libraries = ":".join(str(path) for path in (UNPACKED_EXIM / "usr/lib").glob("*-linux-gnu"))
        self.env = dict(os.environ, LD_LIBRARY_PATH=libraries)

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(self.binary), "-C", str(self.config), *args], input=stdin,
                              capture_output=True, env=self.env, timeout=PATIENCE)

    def send(self, sender: str, recipients: list[str], message: bytes) -> None:
        """Submit (a lone dot is a line: ``-oi``) and deliver in the foreground (``-odf``)."""
        run = self.run("-odf", "-oi", "-f", sender, *recipients, stdin=message)
        if run.returncode != 0:
            raise AssertionError(f"exim failed: {run.stderr.decode(errors='replace')}\n{self.log()}")

    def retry(self) -> None:
        """Deliver what was deferred now, whatever the retry times (``-qff``, in the foreground)."""
        self.run("-qff")

    def log(self) -> str:
        try:
            return (self.root / "log" / "mainlog").read_text(errors="replace")
        except OSError:
            return ""


class EximBDATTests(unittest.TestCase):
    def server(self, **config: str | list[str]) -> Server:
        cwd = world_dir("qpt-bdat-e2e-")
        self.addCleanup(shutil.rmtree, cwd, True)
        files: dict[str, str | list[str]] = {
            "me": "mx.test", "rcpthosts": ["localhost", "vip.test", "other.test"], "loglevel": "LOGINFO",
            "spool_dir": str(cwd / "spool" / "tmp"), "plugins": ["rcpt_ok", MAILDIR],
        }
        files.update(config)
        write_config(cwd / "config", files)
        return Server(self, cwd, ["--config", str(cwd / "config")])

    def delivered(self, server: Server, address: str) -> list[bytes]:
        user, _, domain = address.partition("@")
        new = server.maildir / domain / user / "new"
        return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []

    def test_exim_delivers_with_bdat(self) -> None:
        server = self.server()
        exim = Exim(self, server.port)
        body = b"".join(b".line %d starts with a dot\n" % n for n in range(2000)) + b"..\n.\nend\n"
        exim.send("alice@client.test", ["bob@localhost"],
                  b"From: alice@client.test\nSubject: chunked\n\n" + body)
        [message] = self.delivered(server, "bob@localhost")
        self.assertTrue(message.endswith(b"\n\n" + body), message[-200:])
        self.assertIn(b"Subject: chunked", message)
        delivery = re.search(r"=> bob@localhost .*", exim.log())
        self.assertIsNotNone(delivery, exim.log())
        self.assertIn(" K ", delivery.group(0))  # type: ignore[union-attr]  # Exim used CHUNKING
        self.assertIn('C="250 2.6.0 Queued!', delivery.group(0))  # type: ignore[union-attr]

    def test_exim_large_message_with_bdat(self) -> None:
        server = self.server(size_threshold="65536")
        exim = Exim(self, server.port)
        line = b"0123456789" * 7 + b"\n"
        body = line * (4 * 1024 * 1024 // len(line))
        exim.send("alice@client.test", ["bob@localhost"], b"Subject: big\n\n" + body)
        [message] = self.delivered(server, "bob@localhost")
        self.assertTrue(message.endswith(b"\n\n" + body))
        self.assertRegex(exim.log(), r"=> bob@localhost .* K ")

    def test_policy_groups_second_group_retried_in_its_own_transaction(self) -> None:
        # vip recipients are never greylisted, the others are: one transaction cannot serve both
        server = self.server(policy_groups="@vip.test vip", **{"groups/vip/greylisting": "0"},
                             plugins=["greylisting black_timeout 1 db_dir spool/tmp", "rcpt_ok", MAILDIR])
        exim = Exim(self, server.port)
        exim.send("alice@client.test", ["boss@vip.test", "bob@other.test"],
                  b"From: alice@client.test\nSubject: two groups\n\nhello\n")
        self.assertEqual(len(self.delivered(server, "boss@vip.test")), 1)
        self.assertEqual(self.delivered(server, "bob@other.test"), [])
        self.assertRegex(exim.log(), r"== bob@other.test .* 452 4\.5\.3 .*another policy group")
        # the retry is a transaction of its own, under the other group's policy: greylisted first ...
        exim.retry()
        self.assertRegex(exim.log(), r"== bob@other.test .* 450 4\.7\.1 This mail is temporarily denied")
        self.assertEqual(self.delivered(server, "bob@other.test"), [])
        # ... and accepted once the black window (1 s) has passed
        started = time.monotonic()
        while not self.delivered(server, "bob@other.test") and time.monotonic() - started < PATIENCE:
            time.sleep(0.5)
            exim.retry()
        self.assertEqual(len(self.delivered(server, "bob@other.test")), 1, exim.log())
        self.assertEqual(len(self.delivered(server, "boss@vip.test")), 1)
