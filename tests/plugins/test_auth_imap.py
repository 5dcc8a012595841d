"""auth/imap against a real Dovecot started on loopback with a throw-away config.

Skipped, with the reason, when Dovecot is not installed (Debian:
``apt-get install dovecot-imapd``) or does not start.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK, ConfigError
from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.net_support import free_port, stop_process

PATIENCE = 30.0
CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%n
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def find_dovecot() -> str | None:
    return shutil.which("dovecot") or shutil.which("dovecot", path=os.pathsep.join(["/usr/sbin", "/sbin"]))


class Dovecot:
    """A Dovecot IMAP server on 127.0.0.1 with one user."""

    def __init__(self, case: unittest.TestCase) -> None:
        binary = find_dovecot()
        if binary is None:
            raise unittest.SkipTest("Dovecot is not installed (Debian: apt-get install dovecot-imapd)")
        self.root = Path(tempfile.mkdtemp(prefix="qptwisted-dovecot-"))
        case.addCleanup(shutil.rmtree, self.root, True)
        self.root.chmod(0o755)
        for sub in ("mail", "home"):
            (self.root / sub).mkdir()
            (self.root / sub).chmod(0o777)
        (self.root / "passwd").write_text("alice@example.com:{PLAIN}wonderland::::::\n")
        if os.geteuid() == 0:
            login_user, internal_user, uid, gid = "dovenull", "dovecot", 65534, 65534
        else:
            login_user = internal_user = getpass.getuser()
            uid, gid = os.getuid(), os.getgid()
        self.port = free_port()
        config = self.root / "dovecot.conf"
        config.write_text(CONFIG.format(root=self.root, port=self.port, uid=uid, gid=gid,
                                        login_user=login_user, internal_user=internal_user))
        self.process = subprocess.Popen([binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        case.addCleanup(self.stop)
        deadline = time.monotonic() + PATIENCE
        while True:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise unittest.SkipTest(f"Dovecot did not start: {error.strip()[-300:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE) as probe:
                    if probe.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise unittest.SkipTest("Dovecot did not start listening")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process, PATIENCE)
        if self.process.stderr:
            self.process.stderr.close()


class IMAPAuthTests(unittest.TestCase):
    @inlineCallbacks
    def check(self, port: int, user: str, password: str) -> Any:
        engine = make_engine([f"auth/imap 127.0.0.1 {port}"], clock=reactor)
        result = yield run_hook(engine, "auth_login", make_transaction(engine), "login", user, password,
                                None, None)
        return result.code

    @inlineCallbacks
    def test_login_against_dovecot(self) -> Any:
        dovecot = Dovecot(self)
        self.assertEqual((yield self.check(dovecot.port, "alice@example.com", "wonderland")), OK)
        self.assertEqual((yield self.check(dovecot.port, "alice@example.com", "wrong")), DENY)
        self.assertEqual((yield self.check(dovecot.port, "nobody@example.com", "x")), DENY)

    @inlineCallbacks
    def test_unreachable_server_is_temporary(self) -> Any:
        self.assertEqual((yield self.check(free_port(), "alice@example.com", "wonderland")), DENYSOFT)

    def test_arguments(self) -> None:
        with self.assertRaises(ConfigError):
            make_engine(["auth/imap"])
        engine = make_engine(["auth/imap imap.example.test imaps"])
        self.assertEqual(engine.plugins[-1].port, 993)  # type: ignore[attr-defined]
