"""Real content scanners for tests and benchmarks: spamd, clamd, rspamd and OpenDKIM on loopback.

Each ``start_*`` function runs the daemon from Debian's package with a
private configuration in a fresh temporary directory, on a free port of
127.0.0.1, waits (bounded) until it answers, and returns a :class:`Daemon`
whose :meth:`~Daemon.stop` ends it. Nothing is read from or written to the
system's own configuration, and no daemon is allowed onto the network
(SpamAssassin runs with ``-L``; rspamd's resolver points at a closed
loopback port; clamd gets a signature database written here, so nothing is
downloaded). A daemon that is not installed or does not start raises
:class:`DaemonUnavailable` with the reason, which tests turn into a skip::

    class SpamTests(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            cls.spamd = start_or_skip(start_spamd)

        @classmethod
        def tearDownClass(cls):
            cls.spamd.stop()
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

#: how long a daemon may take to start (rspamd compiles its rules: seconds)
PATIENCE = 90.0

#: the EICAR test string, assembled so that no file of ours contains it whole
EICAR = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*").encode()
#: SpamAssassin's and rspamd's test string for spam
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
#: the name clamd reports for :data:`EICAR` with the signature :func:`start_clamd` writes
EICAR_SIGNATURE = "Qptwisted.Test.EICAR.UNOFFICIAL"

_D = TypeVar("_D", bound="Daemon")


class DaemonUnavailable(Exception):
    """The daemon is not installed or would not start; the message says why."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _program(name: str, package: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise DaemonUnavailable(f"{name} is not installed (Debian package {package}; see .ci/install)")


def _work_directory(prefix: str) -> Path:
    """A temporary directory a daemon that drops privileges can traverse and write."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o777)
    return path


class Daemon:
    """One running daemon: its process, ports, socket paths and directory."""

    def __init__(self, name: str, argv: list[str], root: Path, port: int,
                 env: dict[str, str] | None = None, **extra: Any) -> None:
        self.name = name
        self.root = root
        self.port = port
        self.extra = extra
        self.log_path = root / "output.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=root,
                                            env={**os.environ, **(env or {})}, start_new_session=True)
        atexit.register(self.stop)

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the daemon printed (and its log files), for failure messages."""
        texts = []
        for path in sorted(self.root.glob("*.log")):
            try:
                texts.append(path.read_text(errors="replace")[-3000:])
            except OSError:
                pass
        return "\n".join(texts)

    def wait_port(self, port: int | None = None, timeout: float = PATIENCE) -> None:
        """Wait until the daemon accepts connections on ``port``; :class:`DaemonUnavailable` if not."""
        port = port or self.port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise DaemonUnavailable(f"{self.name} exited with {self.process.returncode}: "
                                        f"{self.output()[-1500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise DaemonUnavailable(f"{self.name} did not listen on port {port} within {timeout:g}s: "
                                f"{self.output()[-1500:]}")

    def pause(self) -> None:
        """Stop the daemon's processes (SIGSTOP): it accepts connections but never answers."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """End the daemon and everything it started, and remove its directory."""
        if self.process.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)
        try:  # children that outlived their parent (rspamd's workers)
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def start_or_skip(start: Callable[..., _D], *args: Any, **kwargs: Any) -> _D:
    """``start(...)``, or ``SkipTest`` with the reason when the daemon is unavailable."""
    from twisted.trial.unittest import SkipTest

    try:
        return start(*args, **kwargs)
    except DaemonUnavailable as err:
        raise SkipTest(str(err)) from None


# -- SpamAssassin -------------------------------------------------------------------------
def start_spamd(children: int = 2) -> Daemon:
    """spamd on 127.0.0.1 with local tests only (``-L``), no Bayes, no user preferences."""
    spamd = _program("spamd", "spamassassin")
    rules = Path("/usr/share/spamassassin")
    if not rules.is_dir():
        raise DaemonUnavailable("SpamAssassin's rules (/usr/share/spamassassin) are missing")
    root = _work_directory("qpt-spamd-")
    for pre in Path("/etc/spamassassin").glob("*.pre"):  # the plugin loaders spamd needs
        shutil.copy(pre, root / pre.name)
    (root / "local.cf").write_text("use_bayes 0\nbayes_auto_learn 0\nskip_rbl_checks 1\n"
                                   "dns_available no\nuse_razor2 0\nuse_pyzor 0\nreport_safe 0\n")
    port = free_port()
    argv = [spamd, f"--listen=127.0.0.1:{port}", "-L", f"--siteconfigpath={root}", "--nouser-config",
            "-x", "-s", "stderr", f"--pidfile={root / 'spamd.pid'}", f"--max-children={children}",
            f"--min-children={children}"]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]
    daemon = Daemon("spamd", argv, root, port, env={"HOME": str(root)})
    daemon.wait_port()
    return daemon


# -- ClamAV -------------------------------------------------------------------------------
def start_clamd(stream_max_length: str = "1M", signatures: dict[str, bytes] | None = None) -> Daemon:
    """clamd on 127.0.0.1 (and a Unix socket, ``extra["socket"]``) with a signature database written here.

    No signatures can be downloaded, so the database is an ``.ndb`` file with
    one body signature per entry of ``signatures`` (default: the EICAR string,
    reported as :data:`EICAR_SIGNATURE`).
    """
    clamd = _program("clamd", "clamav-daemon")
    root = _work_directory("qpt-clamd-")
    database = root / "db"
    database.mkdir()
    entries = signatures or {"Qptwisted.Test.EICAR": EICAR}
    (database / "qptwisted.ndb").write_text("".join(f"{name}:0:*:{data.hex()}\n"
                                                    for name, data in entries.items()))
    port = free_port()
    unix = root / "clamd.sock"
    user = "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    (root / "clamd.conf").write_text(
        f"Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\nLocalSocket {unix}\n"
        f"DatabaseDirectory {database}\nStreamMaxLength {stream_max_length}\n"
        f"LogFile {root / 'clamd.log'}\nPidFile {root / 'clamd.pid'}\nUser {user}\n"
        "MaxThreads 10\nSelfCheck 0\nMaxScanSize 200M\nMaxFileSize 200M\n")
    daemon = Daemon("clamd", [clamd, "-c", str(root / "clamd.conf")], root, port, socket=str(unix))
    daemon.wait_port()
    return daemon


# -- rspamd ---------------------------------------------------------------------------------
def start_rspamd(dkim_domain: str | None = None, dkim_key: bytes | None = None,
                 dkim_selector: str = "test") -> Daemon:
    """rspamd with a minimal local configuration: a normal worker (``port``, the /checkv2 HTTP
    protocol) and a milter proxy (``extra["milter_port"]``), both on 127.0.0.1.

    Only rspamd's own rules run (GTUBE is refused); its resolver points at a
    closed loopback port, so no rule reaches the network. With ``dkim_domain``
    and ``dkim_key`` (PEM) it signs mail from that domain sent from 127.0.0.1.
    """
    rspamd = _program("rspamd", "rspamd")
    try:
        owner = pwd.getpwnam("_rspamd")
    except KeyError:
        raise DaemonUnavailable("the _rspamd user is missing (Debian package rspamd)") from None
    root = _work_directory("qpt-rspamd-")
    db = root / "db"
    db.mkdir()
    port, milter_port, dead = free_port(), free_port(), free_port()
    dkim, filters = "", ""
    if dkim_domain and dkim_key:
        filters = "dkim"
        key_path = root / f"{dkim_domain}.{dkim_selector}.key"
        key_path.write_bytes(dkim_key)
        os.chown(key_path, owner.pw_uid, owner.pw_gid)
        key_path.chmod(0o600)
        dkim = (f'dkim_signing {{ path = "{root}/$domain.$selector.key"; selector = "{dkim_selector}"; '
                "sign_local = true; allow_hdrfrom_mismatch = true; allow_username_mismatch = true; "
                "use_esld = false; check_pubkey = false; }\ndkim { }\n")
    (root / "rspamd.conf").write_text(f"""
lua = "${{RULESDIR}}/rspamd.lua"
modules {{ path = "${{PLUGINSDIR}}"; }}
options {{
  pidfile = "{root}/rspamd.pid";
  dns {{ nameserver = ["127.0.0.1:{dead}"]; timeout = 0.2s; retransmits = 1; }}
  filters = "{filters}";
  cache_file = "{db}/symbols.cache";
  hs_cache_dir = "{_hyperscan_cache(owner, db)}/";
  dynamic_conf = "{db}/dynamic";
  history_file = "{db}/history";
  stats_file = "{db}/stats.ucl";
  control_socket = "{db}/rspamd.sock mode=0600";
  local_addrs = [127.0.0.0/8];
  url_tld = "${{SHAREDIR}}/effective_tld_names.dat";
}}
logging {{ type = "file"; filename = "{root}/rspamd.log"; level = "info"; }}
actions {{ reject = 15; add_header = 6; greylist = 4; }}
worker "normal" {{ bind_socket = "127.0.0.1:{port}"; count = 1; mime = true; }}
worker "rspamd_proxy" {{
  bind_socket = "127.0.0.1:{milter_port}"; count = 1; milter = yes; timeout = 120s;
  upstream "local" {{ default = yes; hosts = "127.0.0.1:{port}"; }}
  spam_header = "X-Spam"; reject_message = "Spam message rejected";
}}
milter_headers {{ use = ["x-spamd-result", "x-rspamd-server"]; skip_local = false; }}
{dkim}""")
    for path in (root, db):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    argv = [rspamd, "-f", "-c", str(root / "rspamd.conf"), "-u", "_rspamd", "-g", "_rspamd"]
    daemon = Daemon("rspamd", argv, root, port, milter_port=milter_port)
    daemon.wait_port()
    daemon.wait_port(milter_port)
    return daemon


def _hyperscan_cache(owner: pwd.struct_passwd, fallback: Path) -> Path:
    """A hyperscan cache shared by the rspamd instances of this machine (compiling takes ~10 s; the
    cache is keyed by the rules' hash), or ``fallback`` when the shared one is not rspamd's alone."""
    shared = Path(tempfile.gettempdir()) / "qptwisted-rspamd-hyperscan"
    try:
        shared.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0 and shared.stat().st_uid != owner.pw_uid:
            os.chown(shared, owner.pw_uid, owner.pw_gid)
        info = shared.stat()
    except OSError:
        return fallback
    if info.st_uid != owner.pw_uid or info.st_mode & 0o077:
        return fallback
    return shared


# -- OpenDKIM --------------------------------------------------------------------------------
def start_opendkim(domain: str, key: bytes, selector: str = "test") -> Daemon:
    """OpenDKIM as a signing milter on 127.0.0.1 for ``domain`` with the PEM private ``key``.

    Mail from 127.0.0.1 is signed (relaxed/simple); ``port`` is its milter socket.
    """
    opendkim = _program("opendkim", "opendkim")
    root = _work_directory("qpt-opendkim-")
    key_path = root / "dkim.key"
    key_path.write_bytes(key)
    key_path.chmod(0o600)
    port = free_port()
    (root / "opendkim.conf").write_text(
        f"Socket inet:{port}@127.0.0.1\nDomain {domain}\nSelector {selector}\nKeyFile {key_path}\n"
        f"Mode s\nCanonicalization relaxed/simple\nBackground no\nPidFile {root / 'opendkim.pid'}\n"
        "RequireSafeKeys no\nSyslog no\nInternalHosts 127.0.0.1\nSignatureAlgorithm rsa-sha256\n"
        "SoftwareHeader no\n")
    daemon = Daemon("opendkim", [opendkim, "-f", "-x", str(root / "opendkim.conf")], root, port)
    daemon.wait_port()
    return daemon


# -- clamav-milter ---------------------------------------------------------------------------
def start_clamav_milter(clamd: Daemon, on_infected: str = "Reject") -> Daemon:
    """clamav-milter on 127.0.0.1 scanning with ``clamd`` (a :func:`start_clamd` daemon).

    ``port`` is its milter socket. Infected mail gets ``on_infected``
    (``Reject``: ``550 5.7.1 Infected with <virus name>``, ``Blackhole`` or
    ``Quarantine``); a clamd that fails
    defers the message; every scanned message gets ``X-Virus-Scanned`` and
    ``X-Virus-Status`` header fields (reporting host ``mx.test``).
    """
    milter = _program("clamav-milter", "clamav-milter")
    root = _work_directory("qpt-clamav-milter-")
    port = free_port()
    (root / "clamav-milter.conf").write_text(
        f"MilterSocket inet:{port}@127.0.0.1\nClamdSocket tcp:127.0.0.1:{clamd.port}\nForeground yes\n"
        f"PidFile {root / 'clamav-milter.pid'}\nTemporaryDirectory {root}\nLogFile {root / 'milter.log'}\n"
        f"OnInfected {on_infected}\nOnFail Defer\nAddHeader Replace\nReportHostname mx.test\n"
        "LogInfected Full\nRejectMsg Infected with %v\n")
    daemon = Daemon("clamav-milter", [milter, "-c", str(root / "clamav-milter.conf")], root, port)
    daemon.wait_port()
    return daemon


__all__ = ["Daemon", "DaemonUnavailable", "EICAR", "EICAR_SIGNATURE", "GTUBE", "free_port",
           "start_clamav_milter", "start_clamd", "start_opendkim", "start_or_skip", "start_rspamd",
           "start_spamd"]
