"""The ``config/plugins`` files printed in the seed talks load unchanged, and mail goes through them.

Each test copies a talk's file as printed (tests/fixtures/seeds/), adds the
site's other config files, starts the engine on it as the server does
(``Engine.from_config``, a listener on 127.0.0.1, the reactor as clock, a
real thread pool), and sends mail with qptwisted's own SMTP client. Queues
are real where the machine has them (Postfix's cleanup, Exim) and a program
with qmail-queue's interface otherwise (there is no qmail here). Plugins that
look things up in DNS ask the test's DNS server, never real DNS.
"""

from __future__ import annotations

import re
import smtplib
import subprocess
import syslog
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from qpplugins.logging.syslog import _Handler as SyslogHandler
from qptwisted.core.engine import Engine, new_threadpool
from qptwisted.core.loader import discover
from qptwisted.lib.smtpclient import Envelope
from qptwisted.service.server import SMTPFactory
from qptwisted.testing.dns import start_dns_server
from tests.plugins.clamav_support import EICAR, SIGNATURE, signatures
from tests.plugins.queue_support import cleanup_postfix, header_of, private_exim, wait_for
from tests.seed_support import (
    FIXTURES,
    QmailQueue,
    clamav_on_path,
    close,
    connect,
    install,
    run,
    set_environment,
)

MESSAGE = (b"From: Alice <alice@example.org>\nTo: Bob <bob@example.test>\nSubject: {subject}\n"
           b"Message-Id: <{subject}@example.org>\nDate: Thu, 01 Jan 1970 00:00:00 +0000\n\nHello.\n")


def message(subject: str, body: bytes = b"") -> bytes:
    return MESSAGE.replace(b"{subject}", subject.encode()) + body


class SeedCase(unittest.TestCase):
    """Start the engine on a config directory as the server does, and talk SMTP to it."""

    def serve(self, directory: Path) -> int:
        pool = new_threadpool()
        pool.start()
        self.addCleanup(pool.stop)
        self.engine = Engine.from_config(str(directory), reactor, pool)
        self.addCleanup(self.engine.close)
        port = reactor.listenTCP(0, SMTPFactory(self.engine), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def send(self, port: int, sender: str, recipients: list[str], data: bytes) -> Any:
        """One message in one session; the delivery result."""
        client = await connect(port)
        try:
            return await client.send_message(Envelope(sender, recipients), [data])
        finally:
            await close(client)


class HolztExampleTests(SeedCase):
    """Michael Holzt's 'plugins'-Beispiel (Ruhr.pm, 2008) and its Variationen."""

    def setUp(self) -> None:
        self.log = Path(self.mktemp()).resolve() / "log" / "qpsmtpd.log"
        self.site = {"me": "mx.example.test", "rcpthosts": "example.test"}

    def install(self, plugins: str, **replace: str) -> Path:
        return install(self, "holzt-2008", plugins, {"/var/log/qpsmtpd.log": str(self.log), **replace},
                       self.site)

    @defer.inlineCallbacks
    def test_the_example(self) -> Any:
        qmail = QmailQueue(self)
        set_environment(self, QMAILQUEUE=str(qmail.program))
        port = self.serve(self.install("plugins"))
        self.assertEqual([p.name for p in self.engine.plugins],
                         ["logging/file", "rcpt_ok", "queue/qmail-queue"])
        self.assertEqual(self.engine.plugins[0].level, 6)  # LOGINFO
        result = yield run(self.send(port, "alice@example.org", ["bob@example.test"], message("example")))
        self.assertEqual(result.data.code, 250, result.data)
        [(stored, envelope)] = qmail.queued()
        self.assertEqual(envelope, b"Falice@example.org\0Tbob@example.test\0\0")
        self.assertIn(b"Subject: example\n", stored)
        self.assertTrue(stored.startswith(b"Received: "), stored[:200])
        # LOGINFO lines reach the file; LOGDEBUG lines do not
        self.assertIn("queued the message", self.log.read_text())
        self.assertNotIn("loaded rcpt_ok from", self.log.read_text())

    @defer.inlineCallbacks
    def test_syslog_variation(self) -> Any:
        sent: list[tuple[int, str]] = []
        def emit(handler: Any, record: Any) -> None:
            priority = handler.encodePriority(handler.facility, handler.mapPriority(record.levelname))
            sent.append((priority, record.getMessage()))

        self.patch(SyslogHandler, "emit", emit)
        qmail = QmailQueue(self)
        set_environment(self, QMAILQUEUE=str(qmail.program))
        port = self.serve(self.install("plugins.syslog"))
        result = yield run(self.send(port, "alice@example.org", ["bob@example.test"], message("syslog")))
        self.assertEqual(result.data.code, 250, result.data)
        self.assertTrue(any("queued the message" in text for _, text in sent), sent)
        self.assertEqual({priority for priority, _ in sent}, {syslog.LOG_NOTICE | syslog.LOG_MAIL})

    @defer.inlineCallbacks
    def test_postfix_variation(self) -> Any:
        postfix = cleanup_postfix()
        port = self.serve(self.install("plugins.postfix", **{"[socketpfad]": str(postfix.cleanup_socket)}))
        self.assertEqual(self.engine.plugins[2].name, "queue/postfix-queue")
        result = yield run(self.send(port, "alice@example.org", ["bob@example.test"], message("postfix")))
        self.assertEqual(result.data.code, 250, result.data)
        self.assertRegex(result.data.text, r"Queued! <postfix@example.org> \(Queue-Id: \w+\)")
        [stored] = wait_for(lambda: postfix.delivered("bob"), "Postfix's delivery to bob")
        self.assertEqual(header_of(stored, "Return-Path"), ["<alice@example.org>"])
        self.assertEqual(header_of(stored, "Delivered-To"), ["bob@example.test"])
        self.assertEqual(header_of(stored, "Subject"), ["postfix"])

    @defer.inlineCallbacks
    def test_exim_variation(self) -> Any:
        root = Path(self.mktemp()).resolve()
        exim = private_exim(root)
        queue_only = root / "exim-rsmtp"
        queue_only.write_text(f"#!/bin/sh\nexec {exim} -odq \"$@\"\n")
        queue_only.chmod(0o755)
        port = self.serve(self.install("plugins.exim", **{"[exim-rsmtp binary]": str(queue_only)}))
        result = yield run(self.send(port, "alice@example.org", ["bob@example.test"], message("exim")))
        self.assertEqual(result.data.code, 250, result.data)
        listing = subprocess.run([str(exim), "-bp"], capture_output=True, text=True, timeout=30).stdout
        self.assertIn("<alice@example.org>", listing)
        self.assertIn("bob@example.test", listing)


class HolztExampleServerTests(unittest.TestCase):
    """The example starts the real server (``twistd qpsmtpd``) unchanged (it once died on ``LOGINFO``)."""

    def test_the_command_starts_and_delivers(self) -> None:
        from tests.test_e2e import Server

        log = Path(self.mktemp()).resolve() / "qpsmtpd.log"
        directory = install(self, "holzt-2008", replace={"/var/log/qpsmtpd.log": str(log)},
                            files={"me": "mx.example.test", "rcpthosts": "example.test"})
        qmail = QmailQueue(self)
        set_environment(self, QMAILQUEUE=str(qmail.program))
        server = Server(self, directory.parent, ["--config", str(directory)])
        with smtplib.SMTP("127.0.0.1", server.port, timeout=60) as client:
            client.ehlo("client.test")
            client.sendmail("alice@example.org", ["bob@example.test"],
                            message("command").replace(b"\n", b"\r\n"))
        [(stored, envelope)] = qmail.queued()
        self.assertEqual(envelope, b"Falice@example.org\0Tbob@example.test\0\0")
        self.assertIn("queued the message", log.read_text())


#: the test DNS server's zone: SPF for the sender, block lists that list nobody
ZONE = {"example.org": [("TXT", "v=spf1 ip4:127.0.0.1 -all"), ("MX", (10, "mx.example.org"))],
        "mx.example.org": [("A", "192.0.2.25")]}


class WritingApplicationsTests(SeedCase):
    """Fred Moyer's configuration from "Writing Applications with Qpsmtpd", all three slides."""

    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE)
        self.qmail = QmailQueue(self)
        set_environment(self, QMAILQUEUE=str(self.qmail.program))
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        clamav_on_path(self, signatures(work))
        plugin_dirs = [str(FIXTURES / "writing-applications" / "plugin_dirs")]
        if "spamassassin" not in discover().stock():
            plugin_dirs.append(str(FIXTURES / "writing-applications" / "until-stock"))
        self.directory = install(self, "writing-applications", files={
            **self.dns.config(), "me": "mx.redhotpenguin.test", "spool_dir": str(work / "spool"),
            "rcpthosts": ["redhotpenguin.com", "taperfriendlymusic.org"], "plugin_dirs": plugin_dirs,
            "vpopmail_users": ["fred@redhotpenguin.com:secret", "craig_qp@redhotpenguin.com:secret"],
            "badmailfrom": "spammer@example.net", "badrcptto": "abuse-me@redhotpenguin.com",
            "badhelo": "aol.com", "rhsbl_zones": "rhsbl.test", "dnsbl_zones": "dnsbl.test",
            # the site's greylisting parameters, in qpsmtpd's own file: retries pass at once
            "denysoft_greylist": "black_timeout 0"})

    async def conversation(self, port: int) -> dict[str, Any]:
        """Greylisted once; then refusals and two deliveries on one connection."""
        seen: dict[str, Any] = {}
        client = await connect(port)
        seen["greylisted"] = await client.command("MAIL FROM:<alice@example.org>")
        await close(client)
        client = await connect(port)
        try:
            seen["badmailfrom"] = await client.command("MAIL FROM:<spammer@example.net>")
            await client.command("RSET")
            seen["mail"] = await client.command("MAIL FROM:<alice@example.org>")
            seen["no mailbox"] = await client.command("RCPT TO:<nobody@redhotpenguin.com>")
            seen["badrcptto"] = await client.command("RCPT TO:<abuse-me@redhotpenguin.com>")
            await client.command("RSET")
            envelope = Envelope("alice@example.org", ["craig_qp@redhotpenguin.com", "fred@redhotpenguin.com"])
            seen["clean"] = await client.send_message(envelope, [message("for craigslist")])
            seen["virus"] = await client.send_message(envelope, [message("a virus", EICAR + b"\n")])
        finally:
            await close(client)
        return seen

    @defer.inlineCallbacks
    def test_the_configuration_as_printed(self) -> Any:
        port = self.serve(self.directory)
        names = [plugin.name for plugin in self.engine.plugins]
        self.assertEqual(names[:6], ["auth/auth_vpopmail_sql", "greylisting", "quit_fortune", "earlytalker",
                                     "count_unrecognized_commands", "relay"])
        self.assertEqual(names[6:], ["check_delivery", "rhsbl", "dnsbl", "badmailfrom", "badrcptto", "helo",
                                     "sender_permitted_from", "rcpt_ok", "virus/klez_filter", "spamassassin",
                                     "virus/clamav", "craigslist", "queue/qmail-queue"])
        self.assertEqual(self.engine.plugin("check_delivery").args,
                         ("normal", "1", "127.0.0.1", "vppmail", "dbuser", "dbpass"))
        seen = yield run(self.conversation(port))
        self.assertEqual(seen["greylisted"].code, 450, seen["greylisted"])
        self.assertIn("temporarily denied", seen["greylisted"].text)
        self.assertEqual(seen["badmailfrom"].code, 550)
        self.assertEqual(seen["mail"].code, 250)
        self.assertEqual(seen["no mailbox"].code, 550)
        self.assertIn("No such user", seen["no mailbox"].text)
        self.assertEqual(seen["badrcptto"].code, 550)
        for name in ("clean", "virus"):
            self.assertEqual(seen[name].data.code, 250, seen[name].data)
        (clean, clean_envelope), (virus, _) = self.qmail.queued()
        self.assertEqual(clean_envelope,
                         b"Falice@example.org\0Tcraig_qp@redhotpenguin.com\0Tfred@redhotpenguin.com\0\0")
        self.assertEqual(header_of(clean, "X-Craigslist-Post"),
                         ["http://www.craigslist.org as fred@redhotpenguin.com"])
        self.assertEqual(header_of(clean, "X-Virus-Checked"), ["Checked by ClamAV on mx.redhotpenguin.test"])
        self.assertEqual(header_of(virus, "X-Virus-Found"), ["Yes"])
        self.assertEqual(header_of(virus, "X-Virus-Details"), [f"{SIGNATURE}.UNOFFICIAL"])
        self.assertTrue(any("spf=pass" in value for value in header_of(clean, "Authentication-Results")))
        # the DNS plugins asked the test's server (and nothing else could have answered them)
        asked = {name for name, _ in self.dns.queries}
        self.assertIn("1.0.0.127.dnsbl.test", asked)
        self.assertIn("example.org.rhsbl.test", asked)
        self.assertIn("example.org", asked)

    def test_old_names_are_reported_once_at_start(self) -> None:
        lines: list[str] = []
        original = Engine.log

        def log(engine: Engine, level: int, text: str, *args: Any, **kwargs: Any) -> None:
            lines.append(text)
            original(engine, level, text, *args, **kwargs)

        self.patch(Engine, "log", log)
        self.serve(self.directory)
        deprecated = [line for line in lines if " is deprecated " in line]
        self.assertEqual([re.match(r"(\S+) is deprecated", line).group(1) for line in deprecated],  # type: ignore[union-attr]
                         ["denysoft_greylist", "check_earlytalker", "check_relay", "check_badmailfrom",
                          "check_badrcptto", "check_spamhelo"])
        self.assertIn("write: greylisting", deprecated[0])

