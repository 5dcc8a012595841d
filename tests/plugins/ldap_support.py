"""A private OpenLDAP ``slapd`` for the LDAP tests: its own config, database, port and certificate.

:class:`Slapd` writes a ``slapd.conf`` and an LDIF into a temporary
directory, loads the LDIF with ``slapadd``, and runs ``slapd -d 0`` as a
child process on ``ldap://127.0.0.1:PORT/`` and ``ldaps://127.0.0.1:PORT2/``
with a self-signed certificate (StartTLS works on the first). Not installed
or not starting: ``SkipTest`` with the reason (Debian: ``apt-get install
slapd ldap-utils``).
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from twisted.trial import unittest

from qptwisted.lib.tls import make_self_signed
from tests.net_support import free_port, port_open, stop_process, wait_for

from .queue_support import PATIENCE

BASE = "dc=example,dc=test"
ADMIN = f"cn=admin,{BASE}"
ADMIN_PASSWORD = "adminsecret"
#: the search account of the tests (``ldap_bind_dn``)
READER = f"cn=reader,{BASE}"
READER_PASSWORD = "readersecret"

CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {root}/slapd.pid
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
{extra}
database mdb
suffix "{base}"
rootdn "{admin}"
rootpw {admin_password}
directory {root}/db
maxsize 10485760
access to attrs=userPassword
    by self read
    by anonymous auth
    by * none
access to *
    by {anonymous} read
    by users read
    by * none
"""

LDIF = """\
dn: {base}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{base}
objectClass: organizationalUnit
ou: people

dn: {reader}
objectClass: simpleSecurityObject
objectClass: organizationalRole
cn: reader
userPassword: {reader_password}

"""

PERSON = """\
dn: uid={uid},ou=people,{base}
objectClass: inetOrgPerson
uid: {uid}
cn: {uid}
sn: {uid}
mail: {uid}@example.test
userPassword: {password}

"""


class Slapd:
    """One slapd with people ``uid=NAME,ou=people,dc=example,dc=test`` (passwords given)."""

    def __init__(self, add_cleanup: Callable[..., object], people: dict[str, str],
                 anonymous_search: bool = True) -> None:
        slapd, slapadd = shutil.which("slapd", path="/usr/sbin:/usr/bin"), \
            shutil.which("slapadd", path="/usr/sbin:/usr/bin")
        if not slapd or not slapadd:
            raise unittest.SkipTest("slapd is not installed (Debian: apt-get install slapd)")
        if not Path("/usr/lib/ldap").is_dir():
            raise unittest.SkipTest("slapd's modules (/usr/lib/ldap) are missing")
        self.root = Path(tempfile.mkdtemp(prefix="qpt-slapd-"))
        add_cleanup(shutil.rmtree, self.root, True)
        (self.root / "db").mkdir()
        self.cert = self.root / "cert.pem"
        self.key = self.root / "key.pem"
        cert_pem, key_pem = make_self_signed(["localhost"], ["127.0.0.1"])
        self.cert.write_bytes(cert_pem)
        self.key.write_bytes(key_pem)
        self.key.chmod(0o600)
        config = self.root / "slapd.conf"
        config.write_text(CONFIG.format(root=self.root, cert=self.cert, key=self.key, base=BASE, admin=ADMIN,
                                        admin_password=ADMIN_PASSWORD, extra="",
                                        anonymous="anonymous" if anonymous_search else "dn.base=\"x\""))
        ldif = LDIF.format(base=BASE, reader=READER, reader_password=READER_PASSWORD)
        ldif += "".join(PERSON.format(uid=uid, password=password, base=BASE)
                        for uid, password in people.items())
        (self.root / "data.ldif").write_text(ldif)
        run = subprocess.run([slapadd, "-f", str(config), "-l", str(self.root / "data.ldif")],
                             capture_output=True, text=True, timeout=PATIENCE)
        if run.returncode != 0:
            raise unittest.SkipTest(f"slapadd failed: {run.stderr.strip()[-400:]}")
        self.port, self.ldaps_port = free_port(), free_port()
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.ldaps_port}/"
        self.log = open(self.root / "slapd.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([slapd, "-d", "0", "-f", str(config), "-h", urls],
                                        stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        add_cleanup(self.stop)
        deadline = time.monotonic() + PATIENCE
        while not (port_open(self.port) and port_open(self.ldaps_port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                output = (self.root / "slapd.log").read_text(errors="replace").strip()[-400:]
                raise unittest.SkipTest(f"slapd did not start: {output}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process, PATIENCE)
        self.log.close()


_shared: dict[str, object] = {}


def shared_slapd() -> Slapd:
    """One slapd for the test run (stopped at exit) with alice, bob and a user with odd characters."""
    if "skip" in _shared:
        raise unittest.SkipTest(str(_shared["skip"]))
    if "slapd" not in _shared:
        try:
            _shared["slapd"] = Slapd(lambda function, *args: atexit.register(function, *args),
                                     {"alice": "wonderland", "bob": "builder", "eve*": "star"})
        except unittest.SkipTest as skip:
            _shared["skip"] = skip.args[0]
            raise
    slapd = _shared["slapd"]
    assert isinstance(slapd, Slapd)
    return slapd


__all__ = ["BASE", "READER", "READER_PASSWORD", "Slapd", "shared_slapd", "wait_for"]
