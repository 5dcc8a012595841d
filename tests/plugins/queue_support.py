"""Real counterparts for the queue plugin tests: Postfix, Dovecot LMTP, PostgreSQL.

Each helper starts its server on a free 127.0.0.1 port in a temporary
directory, waits for it with bounded polling, and stops it in the test's
cleanup. Anything that is not installed or will not start raises
``SkipTest`` with the reason.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from twisted.trial import unittest

from tests.net_support import free_port, port_open, wait_for

PATIENCE = 30.0


def world_dir(prefix: str) -> Path:
    """A temporary directory other users (daemons dropping privileges) can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    parent = path.parent
    if parent.stat().st_mode & 0o005 != 0o005:
        raise unittest.SkipTest(f"{parent} is not traversable by other users")
    return path


def self_signed(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (and 127.0.0.1): (cert file, key file)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


class Postfix:
    """A private Postfix instance: SMTP on 127.0.0.1:``port``, virtual Maildirs under ``mail``.

    Recipients ``*@example.test`` listed in ``users`` get a Maildir
    ``mail/example.test/<user>/``; other recipients are refused at RCPT.
    """

    def __init__(self, add_cleanup: Callable[..., object], users: tuple[str, ...] = ("bob", "carol"),
                 extra: str = "") -> None:
        postfix = shutil.which("postfix") or "/usr/sbin/postfix"
        if not os.path.exists(postfix) or not os.path.isdir("/usr/lib/postfix/sbin"):
            raise unittest.SkipTest("Postfix is not installed")
        if os.geteuid() != 0:
            raise unittest.SkipTest("a private Postfix instance needs root to start")
        try:
            self.owner = pwd.getpwnam("postfix")
            self.vuser = pwd.getpwnam("nobody")
        except KeyError as err:
            raise unittest.SkipTest(f"missing system user: {err}") from err
        self.postfix = postfix
        self.root = world_dir("qpt-postfix-")
        add_cleanup(shutil.rmtree, self.root, True)
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.mail = self.root / "mail"
        self.data = self.root / "data"
        for path in (self.config, self.queue, self.mail, self.data):
            path.mkdir()
        os.chown(self.mail, self.vuser.pw_uid, self.vuser.pw_gid)
        os.chown(self.data, self.owner.pw_uid, self.owner.pw_gid)
        self.port = free_port()
        self.cert, self.key = self_signed(self.config, "localhost")
        (self.config / "vmailbox").write_text("".join(f"{u}@example.test example.test/{u}/\n" for u in users))
        main = f"""
compatibility_level = 3.6
config_directory = {self.config}
queue_directory = {self.queue}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
myhostname = downstream.test
mydomain = downstream.test
myorigin = downstream.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_authorized_xforward_hosts = 127.0.0.0/8
virtual_mailbox_domains = example.test
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.config}/vmailbox
virtual_uid_maps = static:{self.vuser.pw_uid}
virtual_gid_maps = static:{self.vuser.pw_gid}
virtual_minimum_uid = 1
smtpd_tls_cert_file = {self.cert}
smtpd_tls_key_file = {self.key}
smtpd_tls_security_level = may
maillog_file = {self.root}/maillog
maillog_file_prefixes = {self.root}
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
relayhost = [127.0.0.1]:9
default_transport = error:no outbound mail in tests
smtpd_banner = $myhostname ESMTP
{extra}
"""
        (self.config / "main.cf").write_text(main)
        master = []
        for line in Path("/usr/share/postfix/master.cf.dist").read_text().splitlines():
            if not line or line[0] in "# \t":
                continue
            fields = line.split()
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"127.0.0.1:{self.port}"
            if fields[1] in ("inet", "unix", "unix-dgram", "fifo", "pass") and len(fields) >= 8:
                fields[4] = "n"  # no chroot: the queue directory has no copy of the system files
                master.append(" ".join(fields))
        (self.config / "master.cf").write_text("\n".join(master) + "\n")
        env = dict(os.environ, MAIL_CONFIG=str(self.config))
        self.env = env
        run = subprocess.run([postfix, "-c", str(self.config), "start"], env=env,
                             capture_output=True, text=True, timeout=PATIENCE)
        if run.returncode != 0:
            raise unittest.SkipTest(f"Postfix did not start: {run.stderr.strip()[-500:]}")
        add_cleanup(self.stop)
        wait_for(lambda: port_open(self.port), f"Postfix on port {self.port}")

    @property
    def cleanup_socket(self) -> Path:
        """The socket of Postfix's ``cleanup`` service."""
        return self.queue / "public" / "cleanup"

    def postcat(self, queue_id: str) -> str:
        """What ``postcat -q`` shows of a queued message (envelope records and content)."""
        run = subprocess.run(["postcat", "-c", str(self.config), "-q", queue_id], env=self.env,
                             capture_output=True, text=True, timeout=PATIENCE)
        return run.stdout + run.stderr

    def stop(self) -> None:
        subprocess.run([self.postfix, "-c", str(self.config), "stop"], env=self.env,
                       capture_output=True, timeout=PATIENCE)
        pid_file = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + PATIENCE
        while pid_file.exists() and time.monotonic() < deadline:
            try:
                os.kill(int(pid_file.read_text().split()[0]), 0)
            except (OSError, ValueError):
                break
            time.sleep(0.05)

    def clear(self) -> None:
        """Empty every Maildir (between tests sharing one instance)."""
        for new in self.mail.glob("*/*/new"):
            for path in new.iterdir():
                path.unlink()

    def maildir(self, user: str) -> Path:
        return self.mail / "example.test" / user

    def delivered(self, user: str) -> list[bytes]:
        """The messages in ``user``'s Maildir ``new/``."""
        new = self.maildir(user) / "new"
        if not new.is_dir():
            return []
        return [path.read_bytes() for path in sorted(new.iterdir())]

    def log(self) -> str:
        try:
            return (self.root / "maillog").read_text(errors="replace")
        except OSError:
            return ""

    def flush(self) -> None:
        subprocess.run([self.postfix, "-c", str(self.config), "flush"], env=self.env,
                       capture_output=True, timeout=PATIENCE)


_shared: dict[str, object] = {}


def shared_postfix(kind: str = "postfix", extra: Callable[[Path], str] | None = None) -> Postfix:
    """One Postfix instance of ``kind`` for the whole test run (stopped at exit), Maildirs emptied.

    ``extra`` writes what the instance needs into a directory of its own and
    returns more ``main.cf`` lines (used when ``kind`` is first started).
    """
    if f"skip {kind}" in _shared:
        raise unittest.SkipTest(str(_shared[f"skip {kind}"]))
    if kind not in _shared:
        def later(function: Callable[..., object], *args: object) -> None:
            atexit.register(function, *args)

        try:
            lines = ""
            if extra is not None:
                files = world_dir(f"qpt-{kind}-files-")
                later(shutil.rmtree, files, True)
                lines = extra(files)
            _shared[kind] = Postfix(later, extra=lines)
        except unittest.SkipTest as skip:
            _shared[f"skip {kind}"] = skip.args[0]
            raise
    postfix = _shared[kind]
    assert isinstance(postfix, Postfix)
    postfix.clear()
    return postfix


def _filtering(files: Path) -> str:
    (files / "header_checks").write_text("/^Subject:.*reject-me/ REJECT no thanks\n")
    # a lookup table that cannot be opened: cleanup defers what it would map (FLAG_MAP_OK)
    return (f"header_checks = regexp:{files}/header_checks\n"
            f"canonical_maps = regexp:{files}/missing-canonical-map\n")


def cleanup_postfix() -> Postfix:
    """The shared Postfix for mail handed to ``cleanup`` itself (``queue/postfix-queue``).

    Its ``public/cleanup`` socket is :attr:`Postfix.cleanup_socket`. With
    ``FLAG_FILTER``, ``header_checks`` refuses a Subject containing
    ``reject-me`` (``5.7.1 no thanks``); with ``FLAG_MAP_OK``, a
    ``canonical_maps`` table that cannot be opened makes ``cleanup`` answer
    "try again later". Without flags, mail is delivered as by :func:`shared_postfix`.
    """
    return shared_postfix("cleanup", _filtering)


def _terminate(pid_file: Path, how: int = signal.SIGTERM) -> None:
    """Signal the daemon whose pid is in ``pid_file`` (if it is still there)."""
    try:
        os.kill(int(pid_file.read_text().split()[0]), how)
    except (OSError, ValueError, IndexError):
        pass


def header_of(message: bytes, name: str) -> list[str]:
    """All values of header ``name`` in a raw message."""
    head = message.split(b"\n\n", 1)[0].replace(b"\r\n", b"\n").decode("utf-8", "replace")
    head = re.sub(r"\n[ \t]+", " ", head)
    prefix = name.lower() + ":"
    return [line[len(prefix):].strip() for line in head.split("\n") if line.lower().startswith(prefix)]


class Dovecot:
    """A private Dovecot serving only LMTP on 127.0.0.1:``port``; Maildirs under ``mail/<user>``.

    Users ``bob`` and ``carol`` (any domain) exist; ``full`` has a 1-byte quota.
    """

    def __init__(self, add_cleanup: Callable[..., object]) -> None:
        dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not os.path.exists(dovecot) or not os.path.exists("/usr/lib/dovecot/lmtp"):
            raise unittest.SkipTest("Dovecot LMTP is not installed (dovecot-lmtpd)")
        if os.geteuid() != 0:
            raise unittest.SkipTest("a private Dovecot instance needs root to start")
        try:
            vuser = pwd.getpwnam("nobody")
        except KeyError as err:
            raise unittest.SkipTest(f"missing system user: {err}") from err
        self.dovecot = dovecot
        self.root = world_dir("qpt-dovecot-")
        add_cleanup(shutil.rmtree, self.root, True)
        self.mail = self.root / "mail"
        self.mail.mkdir()
        os.chown(self.mail, vuser.pw_uid, vuser.pw_gid)
        (self.root / "run").mkdir()
        self.port = free_port()
        users = self.root / "users"
        users.write_text("".join(
            f"{name}:{{PLAIN}}x:{vuser.pw_uid}:{vuser.pw_gid}::{self.mail}/{name}::{extra}\n"
            for name, extra in (("bob", ""), ("carol", ""), ("full", "userdb_quota_rule=*:bytes=1"))))
        self.config = self.root / "dovecot.conf"
        self.config.write_text(f"""
protocols = lmtp
base_dir = {self.root}/run
state_dir = {self.root}/run
log_path = {self.root}/dovecot.log
listen = 127.0.0.1
ssl = no
mail_location = maildir:~/Maildir
mail_plugins = quota
auth_username_format = %Ln
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
plugin {{
  quota = maildir:User quota
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
lmtp_rcpt_check_quota = no
""")
        add_cleanup(self.stop)
        with open(self.root / "start.out", "wb") as out:
            run = subprocess.run([dovecot, "-c", str(self.config)], stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL, timeout=PATIENCE)
        if run.returncode != 0:
            output = (self.root / "start.out").read_text(errors="replace").strip()[-500:]
            raise unittest.SkipTest(f"Dovecot did not start: {output}")
        wait_for(lambda: port_open(self.port), f"Dovecot LMTP on port {self.port}")

    def stop(self) -> None:
        pid_file = self.root / "run" / "master.pid"
        _terminate(pid_file)
        deadline = time.monotonic() + PATIENCE
        while pid_file.exists() and time.monotonic() < deadline:
            try:
                os.kill(int(pid_file.read_text().split()[0]), 0)
            except (OSError, ValueError):
                break
            time.sleep(0.05)

    def clear(self) -> None:
        for new in self.mail.glob("*/Maildir/new"):
            for path in new.iterdir():
                path.unlink()

    def delivered(self, user: str) -> list[bytes]:
        new = self.mail / user / "Maildir" / "new"
        return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []

    def log(self) -> str:
        try:
            return (self.root / "dovecot.log").read_text(errors="replace")
        except OSError:
            return ""


def shared_dovecot() -> Dovecot:
    """One Dovecot for the whole test run (stopped at exit), Maildirs emptied."""
    if "dovecot_skip" in _shared:
        raise unittest.SkipTest(str(_shared["dovecot_skip"]))
    if "dovecot" not in _shared:
        try:
            _shared["dovecot"] = Dovecot(lambda function, *args: atexit.register(function, *args))
        except unittest.SkipTest as skip:
            _shared["dovecot_skip"] = skip.args[0]
            raise
    dovecot = _shared["dovecot"]
    assert isinstance(dovecot, Dovecot)
    dovecot.clear()
    return dovecot


class PostgreSQL:
    """A private PostgreSQL cluster (initdb in a temporary directory, run as ``postgres``)."""

    def __init__(self, add_cleanup: Callable[..., object]) -> None:
        bindir = Path("/usr/lib/postgresql")
        candidates = sorted(bindir.glob("*/bin/initdb")) if bindir.is_dir() else []
        initdb = str(candidates[-1]) if candidates else shutil.which("initdb")
        if not initdb:
            raise unittest.SkipTest("PostgreSQL is not installed")
        self.pg_ctl = str(Path(initdb).with_name("pg_ctl"))
        try:
            import psycopg  # noqa: F401
        except ImportError as err:
            raise unittest.SkipTest(f"psycopg is not installed: {err}") from err
        try:
            user = pwd.getpwnam("postgres")
        except KeyError as err:
            raise unittest.SkipTest("no 'postgres' system user to run the server as") from err
        if os.geteuid() != 0:
            raise unittest.SkipTest("starting PostgreSQL as another user needs root")
        self.root = world_dir("qpt-pg-")
        add_cleanup(shutil.rmtree, self.root, True)
        os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()

        def as_postgres() -> None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

        self._demote = as_postgres
        run = subprocess.run([initdb, "-D", str(self.data), "-U", "qp", "--auth=trust", "-E", "UTF8",
                              "--no-sync"], capture_output=True, text=True, timeout=60,
                             preexec_fn=as_postgres, cwd=self.root)
        if run.returncode != 0:
            raise unittest.SkipTest(f"initdb failed: {run.stderr.strip()[-300:]}")
        add_cleanup(self.stop)
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root}"
        with open(self.root / "start.out", "wb") as out:
            run = subprocess.run([self.pg_ctl, "-D", str(self.data), "-o", options, "-l",
                                  str(self.root / "server.log"), "-w", "start"], stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL, timeout=60, preexec_fn=as_postgres, cwd=self.root)
        if run.returncode != 0:
            raise unittest.SkipTest("PostgreSQL did not start: "
                                    + (self.root / "start.out").read_text(errors="replace")[-300:])
        self.dsn = f"postgresql://qp@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        pid_file = self.data / "postmaster.pid"
        _terminate(pid_file, signal.SIGQUIT)
        deadline = time.monotonic() + PATIENCE
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as connection:
            cursor = connection.execute(sql, args)  # type: ignore[arg-type]
            return list(cursor.fetchall()) if cursor.description else []


def shared_postgresql() -> PostgreSQL:
    """One PostgreSQL for the whole test run (stopped at exit)."""
    if "pg_skip" in _shared:
        raise unittest.SkipTest(str(_shared["pg_skip"]))
    if "pg" not in _shared:
        try:
            _shared["pg"] = PostgreSQL(lambda function, *args: atexit.register(function, *args))
        except unittest.SkipTest as skip:
            _shared["pg_skip"] = skip.args[0]
            raise
    pg = _shared["pg"]
    assert isinstance(pg, PostgreSQL)
    return pg


_STAND_IN_PROLOGUE = """#!{python}
import json, os, sys, time
out = {out!r}
behaviour = open(out + "/behaviour").read().strip()
if behaviour == "hang":
    time.sleep(3600)
"""


#: where CI unpacks Debian's exim4 (the package conflicts with the Postfix the other tests use)
UNPACKED_EXIM = Path("/opt/qptwisted-test/exim")


def private_exim(root: Path) -> Path:
    """A script that runs Exim with a private configuration under ``root`` (spool ``root/spool``).

    The installed Exim or the one ``.ci/install`` unpacked; ``SkipTest`` if
    there is none, or if this is not root (a ``-C`` configuration keeps the
    sender only for root). Messages stay in the spool (no routers).
    """
    candidates = ("/usr/sbin/exim4", "/usr/sbin/exim", str(UNPACKED_EXIM / "usr/sbin/exim4"))
    exim = next((path for path in candidates if os.path.exists(path)), None)
    if exim is None:
        raise unittest.SkipTest("Exim is not installed (nor unpacked by .ci/install)")
    if os.geteuid() != 0:
        raise unittest.SkipTest("a private Exim configuration (-C) keeps the sender only for root")
    (root / "spool").mkdir(parents=True)
    config = root / "exim.conf"
    config.write_text(f"""
spool_directory = {root}/spool
log_file_path = {root}/%slog
primary_hostname = downstream.test
exim_user = root
exim_group = root
trusted_users = root
keep_environment =
begin routers
begin transports
""")
    libraries = ":".join(str(path) for path in (UNPACKED_EXIM / "usr/lib").glob("*-linux-gnu"))
    preload = f"LD_LIBRARY_PATH={libraries} " if exim.startswith(str(UNPACKED_EXIM)) else ""
    wrapper = root / "exim"
    wrapper.write_text(f"#!/bin/sh\n{preload}exec {exim} -C {config} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


class StandInCase(unittest.TestCase):
    """Tests of a queue plugin that runs a program, with a stand-in program written by the test.

    :attr:`script` (Python) runs after a prologue that sets ``out`` (the
    test's directory) and ``behaviour`` (what :meth:`behave` wrote; ``hang``
    sleeps instead); the program is ``self.program``.
    """

    program_name = "program"
    script = ""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir(parents=True)
        self.program = self.dir / self.program_name
        prologue = _STAND_IN_PROLOGUE.format(python=sys.executable, out=str(self.dir))
        self.program.write_text(prologue + self.script)
        self.program.chmod(0o755)

    def behave(self, behaviour: str) -> None:
        """What the program does next: an exit code (and output), or ``hang``."""
        (self.dir / "behaviour").write_text(behaviour)
