"""The live web view in a real headless Chromium, and the HTTP side's guards.

The end-to-end test runs ``twistd qpsmtpd --web``, delivers mail that is
accepted, refused by one plugin and deferred by another, opens the page in
Chromium (Debian's ``chromium``, driven over the DevTools protocol) and
reads the DOM: one row per transaction, a coloured cell per plugin verdict,
a live session, a row that arrives while the page is open, charts drawn, and
no request to anything but the server. The page's screenshot is kept in
``test-artifacts/`` (or ``$QPT_ARTIFACTS``).
"""

from __future__ import annotations

import base64
import json
import os
import smtplib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web import resource
from twisted.web.test.requesthelper import DummyRequest

from qptwisted.service.http import QuietSite, _Root, build_view, is_loopback, local_endpoint
from qptwisted.service.web import web_resources
from qptwisted.service.web.activity import Activity, Subscriber
from qptwisted.testing import make_engine
from tests.browser import Chromium, find_chromium
from tests.core_support import CaptureQueue, Dialogue
from tests.test_e2e import PATIENCE, E2EBase, Server, free_port, message, wait_for

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("QPT_ARTIFACTS") or REPO / "test-artifacts")
LATER_PLUGIN = '''
from qptwisted import DECLINED, DENYSOFT, Plugin


class Later(Plugin):
    """test_later: defers recipients called later@."""

    name = "test_later"

    def hook_rcpt(self, transaction, rcpt, **params):
        if rcpt.user == "later":
            return DENYSOFT, "try later"
        return DECLINED
'''
COLOURS = {"accept": "rgb(46, 157, 79)", "refuse": "rgb(210, 52, 61)", "defer": "rgb(224, 161, 0)",
           "skip": "rgb(201, 206, 212)"}


def cell_js(row_state: str, plugin: str) -> str:
    """JavaScript: the verdict and background colour of ``plugin``'s cell in the first row in that state."""
    return (f"(() => {{ const td = document.querySelector('#rows tr[data-state=\"{row_state}\"] "
            f"td[data-plugin=\"{plugin}\"]'); return td ? [td.dataset.verdict || '', "
            "getComputedStyle(td).backgroundColor] : null; })()")


class BrowserTests(E2EBase):
    timeout = 240

    def test_live_page_in_chromium(self) -> None:
        binary = find_chromium()
        if binary is None:
            raise unittest.SkipTest("chromium is not installed (Debian package chromium)")
        cwd = self.workdir()
        plugins = cwd / "plugins"
        plugins.mkdir()
        (plugins / "test_later.py").write_text(LATER_PLUGIN)
        config = self.config(cwd, plugins="badrcptto\ntest_later\nrcpt_ok\nqueue/maildir spool/maildir\n",
                             badrcptto="spam@localhost\n", plugin_dirs=f"{plugins}\n")
        web = free_port()
        server = Server(self, cwd, ["--config", str(config), "--web", f"tcp:{web}"])

        client = smtplib.SMTP("127.0.0.1", server.port, timeout=PATIENCE)
        client.ehlo("sender.test")
        self.assertEqual(client.sendmail("alice@example.org", ["bob@localhost"], message("first")), {})
        client.mail("mallory@example.org")
        self.assertEqual(client.rcpt("spam@localhost")[0], 550)
        client.rset()
        client.mail("carol@example.org")
        self.assertEqual(client.rcpt("later@localhost")[0], 450)
        client.rset()
        client.quit()
        waiting = smtplib.SMTP("127.0.0.1", server.port, timeout=PATIENCE)  # a live session, mid-transaction
        waiting.ehlo("waiting.test")
        waiting.mail("dave@example.org")
        self.addCleanup(waiting.close)

        browser = Chromium(binary)
        self.addCleanup(browser.close)
        browser.navigate(f"http://127.0.0.1:{web}/")
        browser.wait_for("document.querySelectorAll('#rows tbody tr').length >= 3", "the transaction rows")
        browser.wait_for("document.getElementById('status').dataset.state === 'live'", "the live stream")

        self.assertEqual(browser.evaluate(cell_js("accepted", "rcpt_ok")), ["accept", COLOURS["accept"]])
        self.assertEqual(browser.evaluate(cell_js("accepted", "badrcptto")), ["skip", COLOURS["skip"]])
        self.assertEqual(browser.evaluate(cell_js("accepted", "queue/maildir")),
                         ["accept", COLOURS["accept"]])
        self.assertEqual(browser.evaluate(cell_js("refused", "badrcptto")), ["refuse", COLOURS["refuse"]])
        self.assertEqual(browser.evaluate(cell_js("deferred", "test_later")), ["defer", COLOURS["defer"]])
        accepted = browser.evaluate("[...document.querySelectorAll('#rows tr[data-state=\"accepted\"] td')]"
                                    ".map(td => td.textContent)")
        self.assertIn("127.0.0.1", accepted)
        self.assertIn("sender.test", accepted)
        self.assertIn("<alice@example.org>", accepted)
        self.assertIn("<bob@localhost>", accepted)
        self.assertIn("queue/maildir", accepted)
        live = browser.wait_for("[...document.querySelectorAll('#live tbody tr td')]"
                                ".map(td => td.textContent).filter(t => t.includes('dave@example.org'))",
                                "the live session")
        self.assertEqual(live, ["<dave@example.org>"])

        # a message that arrives while the page is open shows up without a reload
        self.assertEqual(waiting.rcpt("bob@localhost")[0], 250)
        self.assertEqual(waiting.data(message("second"))[0], 250)
        browser.wait_for("document.querySelectorAll('#rows tr[data-state=\"accepted\"]').length === 2",
                         "the new row, pushed live")
        ids = browser.evaluate("window.qpsmtpdLive.rows.map(r => r.id)")
        self.assertEqual(len(ids), len(set(ids)))
        browser.wait_for("window.qpsmtpdLive.ticks.some(t => t.accepted > 0)", "the chart to count it")
        drawn = browser.evaluate(
            "(() => { const c = document.getElementById('chart-messages'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4)"
            " if (d[i + 3] > 128 && Math.abs(d[i] - 46) < 40 && Math.abs(d[i + 1] - 157) < 40"
            " && Math.abs(d[i + 2] - 79) < 40) n++; return n; })()")
        self.assertGreater(drawn, 3)  # the accepted line (green), drawn at the right end of the window
        resources = browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        self.assertTrue(resources)
        self.assertEqual([url for url in resources if not url.startswith(f"http://127.0.0.1:{web}/")], [])

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "web-view.png"
        browser.screenshot(str(shot))
        self.assertEqual(shot.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        waiting.quit()


def is_error(page: Any) -> bool:
    return type(page).__name__ == "_ErrorPage"


class WorkersTests(E2EBase):
    """``--workers 2 --web``: the master serves what its workers saw."""

    def test_master_merges_the_workers(self) -> None:
        cwd = self.workdir()
        web = free_port()
        server = Server(self, cwd, ["--config", str(self.config(cwd)), "--workers", "2",
                                    "--web", f"tcp:{web}"])
        for n in range(4):  # one connection each: the kernel spreads them over the workers
            self.send(server, f"w{n}")
        waiting = smtplib.SMTP("127.0.0.1", server.port, timeout=PATIENCE)
        waiting.ehlo("waiting.test")
        waiting.mail("dave@example.org")
        self.addCleanup(waiting.close)

        def state() -> dict[str, Any]:
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/state", timeout=30) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]

        def merged() -> dict[str, Any] | None:
            now = state()
            accepted = [row for row in now["rows"] if row["state"] == "accepted"]
            live = [row for row in now["live"] if row["sender"] == "<dave@example.org>"]
            counted = sum(tick["accepted"] for tick in now["ticks"])
            return now if len(accepted) == 4 and live and counted == 4 else None

        now = wait_for(merged, "the workers' rows and live session at the master")
        assert isinstance(now, dict)
        ids = [row["id"] for row in now["rows"]]
        self.assertEqual(len(ids), len(set(ids)))  # ids carry the worker's pid
        self.assertTrue(all(":" in row_id for row_id in ids))
        self.assertIn("queue/maildir", now["plugins"])
        self.assertGreaterEqual(now["sessions"], 1)
        waiting.quit()


class PipeTests(unittest.TestCase):
    def test_a_full_pipe_never_blocks_the_worker_and_lines_stay_whole(self) -> None:
        from qptwisted.service.web.relay import PipeSubscriber, WorkersActivity

        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        pipe = PipeSubscriber(write)
        big = json.dumps({"rows": [], "live": [], "plugins": ["p"], "pad": "x" * 50000})
        sent = 0
        while pipe.send("update", big):  # the master does not read: the pipe fills, send says so
            sent += 1
        self.assertGreater(sent, 0)
        os.set_blocking(read, False)
        master = WorkersActivity(Clock())
        received = b""
        while True:
            try:
                chunk = os.read(read, 1 << 16)
            except BlockingIOError:
                if not pipe.rest or not pipe.send("update", big):
                    break
                continue
            received += chunk
            master.receive(4242, chunk)
        self.assertTrue(received.endswith(b"\n"))
        self.assertEqual(master.workers[4242].partial, b"")
        self.assertEqual(master.plugins, ["p"])


class GuardTests(unittest.TestCase):
    def view(self) -> resource.IResource:
        return build_view(web_resources(Activity(Clock())))

    def child(self, root: _Root, client: Any) -> resource.IResource:
        request = DummyRequest([b""])
        request.client = client
        return root.getChildWithDefault(b"state", request)

    def test_only_loopback_clients_unless_asked(self) -> None:
        closed = _Root(None, self.view(), allow_remote=False)
        self.assertTrue(is_error(self.child(closed, IPv4Address("TCP", "192.0.2.7", 5000))))
        self.assertTrue(is_error(self.child(closed, IPv6Address("TCP", "2001:db8::7", 5000))))
        self.assertFalse(is_error(self.child(closed, IPv4Address("TCP", "127.0.0.1", 5000))))
        self.assertFalse(is_error(self.child(closed, IPv6Address("TCP", "::1", 5000))))
        opened = _Root(None, self.view(), allow_remote=True)
        self.assertFalse(is_error(self.child(opened, IPv4Address("TCP", "192.0.2.7", 5000))))

    def test_endpoints_default_to_loopback(self) -> None:
        self.assertEqual(local_endpoint("9025"), "tcp:9025:interface=127.0.0.1")
        self.assertEqual(local_endpoint("tcp:9025"), "tcp:9025:interface=127.0.0.1")
        self.assertEqual(local_endpoint("tcp6:9025"), r"tcp6:9025:interface=\:\:1")
        self.assertEqual(local_endpoint("tcp:9025:interface=0.0.0.0"), "tcp:9025:interface=0.0.0.0")
        self.assertEqual(local_endpoint("unix:/run/qpsmtpd/web.sock"), "unix:/run/qpsmtpd/web.sock")
        self.assertTrue(is_loopback("::ffff:127.0.0.1"))
        self.assertFalse(is_loopback("10.1.2.3"))

    @inlineCallbacks
    def test_password_and_security_headers(self) -> Any:
        passwords = Path(self.mktemp())
        passwords.write_text("admin:s3cret\n")
        activity = Activity(reactor)
        site = QuietSite(_Root(None, build_view(web_resources(activity), str(passwords)), False))
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/state"

        def fetch(user: str | None) -> tuple[int, dict[str, str]]:
            request = urllib.request.Request(url)
            if user:
                request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, dict(response.headers)
            except urllib.error.HTTPError as err:
                return err.code, dict(err.headers)

        status, _ = yield deferToThread(fetch, None)
        self.assertEqual(status, 401)
        status, _ = yield deferToThread(fetch, "admin:wrong")
        self.assertEqual(status, 401)
        status, headers = yield deferToThread(fetch, "admin:s3cret")
        self.assertEqual(status, 200)
        self.assertIn("default-src 'self'", headers["Content-Security-Policy"])
        self.assertEqual(headers["X-Frame-Options"], "DENY")


class Recorder(Subscriber):
    """A subscriber that keeps what it is sent, and can refuse (a browser that does not read)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.reading = True

    def send(self, event: str, data: str) -> bool:
        if not self.reading:
            return False
        self.events.append((event, json.loads(data)))
        return True


class ActivityTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = make_engine(["badrcptto", "rcpt_ok", CaptureQueue],
                                  config={"rcpthosts": "example.com", "badrcptto": "spam@example.com"},
                                  clock=self.clock)
        self.addCleanup(self.engine.close)
        self.activity = Activity(self.clock, keep=3, live_max=2)
        self.engine.observer = self.activity

    def test_rows_states_and_cells(self) -> None:
        smtp = Dialogue(self.engine)
        smtp.deliver("<a@example.org>", ["<b@example.com>"], "Subject: x\r\n\r\nhi\r\n")
        smtp.send("MAIL FROM:<m@example.org>", "RCPT TO:<spam@example.com>", "RSET")
        smtp.send("MAIL FROM:<c@example.org>", "RCPT TO:<b@example.com>", "QUIT")
        smtp.close()
        probe = Dialogue(self.engine)  # connects and leaves: still a row
        probe.close()
        rows = list(self.activity.rows)
        self.assertEqual([row["state"] for row in rows], ["refused", "abandoned", "closed"])  # keep=3
        refused = rows[0]
        self.assertEqual((refused["sender"], refused["by"]), ("<m@example.org>", "badrcptto"))
        self.assertEqual(refused["verdicts"]["badrcptto"], {"v": "refuse", "hooks": "rcpt:deny"})
        self.assertNotIn("test_capture_queue", refused["verdicts"])

    def test_subscribers_and_a_browser_that_stops_reading(self) -> None:
        browser = Recorder()
        unsubscribe = self.activity.subscribe(browser)
        self.assertEqual(browser.events[0][0], "state")
        smtp = Dialogue(self.engine)
        smtp.deliver("<a@example.org>", ["<b@example.com>"], "Subject: x\r\n\r\nhi\r\n")
        self.activity.tick()
        event, update = browser.events[-1]
        self.assertEqual(event, "update")
        self.assertEqual([row["state"] for row in update["rows"]], ["accepted"])
        self.assertEqual(update["figures"]["accepted"], 1)
        self.assertEqual(update["sessions"], 1)
        browser.reading = False
        smtp.deliver("<a@example.org>", ["<b@example.com>"], "Subject: y\r\n\r\nhi\r\n")
        self.activity.tick()  # missed
        browser.reading = True
        self.activity.tick()
        event, state = browser.events[-1]
        self.assertEqual(event, "state")  # a full state, with the row it missed
        self.assertEqual(len(state["rows"]), 2)
        unsubscribe()
        self.activity.tick()
        self.assertEqual(browser.events[-1], (event, state))
        smtp.close()

    def test_live_sessions_are_capped(self) -> None:
        sessions = [Dialogue(self.engine) for _ in range(4)]
        state = self.activity.state()
        self.assertEqual((len(state["live"]), state["sessions"]), (2, 4))
        for smtp in sessions:
            smtp.close()
        self.assertEqual(self.activity.state()["sessions"], 0)


class StaticTests(unittest.TestCase):
    def test_no_external_asset(self) -> None:
        from qptwisted.service.web import STATIC

        for path in STATIC.iterdir():
            text = path.read_text()
            self.assertNotIn("http://", text.replace("http://127.0.0.1", ""), path.name)
            self.assertNotIn("https://", text, path.name)
            self.assertNotIn("innerHTML", text, path.name)  # data only ever enters through textContent
