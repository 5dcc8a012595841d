"""Durability of the queues: SIGKILL at random moments, a full disk, a read-only directory.

The kill tests run the real server (``twistd -n qpsmtpd``) in a subprocess
and stream messages at it with ``smtplib`` while a timer kills it with
``SIGKILL`` at a random moment (``random.Random(seed)``; the seed is in every
failure message and can be fixed with the environment variable
``QPT_DURABILITY_SEED``). The server is started again on the same port, with
the same config and working directory, so its store persists; after at
least five kill rounds a final clean phase sends a few more messages. Then
the store is read: the Maildir ``new/`` of ``queue/maildir``, the SQLite
table of ``queue/sql``, or the Maildir a real Postfix delivered to for
``queue/smtp-forward`` (skipped when Postfix cannot run).

Every message carries a unique token (``Subject``, ``Message-Id`` and a final
body line ``token=<tok>``) and gets one of three outcomes:

* ACCEPTED: the client read ``250`` after the final dot;
* REFUSED: the client read a 4xx/5xx reply at some step;
* UNKNOWN: the connection died before the reply after the final dot was
  read (a disconnect anywhere in ``sendmail()``); the server may or may not
  have committed the message. RFC 5321 section 6.1 accepts a possible
  duplicate delivery here, never a loss.

Afterwards every ACCEPTED message is present exactly once, every REFUSED one
is absent, every UNKNOWN one is present at most once, nothing is present
that was never sent, and every stored copy is complete: its body is exactly
the body that was sent, down to the ``token=`` line. A message whose
connection died while connecting or at EHLO was never sent and is not
recorded.

Messages vary in size (small, 20 KB, 200 KB above ``size_threshold`` so the
body is spooled to a file) so that kills land in different phases: during
DATA, during the fsync or the commit, between the 250 and the next command.

For ``queue/maildir`` a file left in ``tmp/`` by a kill is allowed (the
Maildir convention; readers never look there). The plugin renames
``tmp/NAME`` to ``new/NAME``; a ``tmp/NAME`` beside a delivered ``new/NAME``
is accepted only as a second name of the same file (as a link-then-unlink
delivery could leave), never as a separate copy.

The storage-error tests check that a full disk (``RLIMIT_FSIZE`` on the
server process: writes beyond the limit fail with ``EFBIG``, the same
``OSError`` path as ``ENOSPC``) or a permission error while spooling the body
or while queuing gives ``452`` and a log line naming the error, and that the
same server process then accepts the next message. Root ignores mode bits,
so as root the server runs without ``CAP_DAC_OVERRIDE`` (or, failing that, as
``nobody``); the test is skipped with the reason if neither works. Every wait
is bounded.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import random
import resource
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.trial import unittest

from tests.plugins.queue_support import header_of, shared_postfix
from tests.test_e2e import TWISTD, E2EBase, Server, free_port, message, wait_for

ACCEPTED, REFUSED, UNKNOWN = "ACCEPTED", "REFUSED", "UNKNOWN"
SENDER = "alice@example.org"
#: smtplib timeout for every command of the streaming client
CLIENT_TIMEOUT = 10.0
#: wall-clock budget of one kill test (rounds and final phase; not the reading of the store)
BUDGET = 40.0
#: kill rounds: at least MIN_ROUNDS, more (up to MAX_ROUNDS) until a kill hit a message in flight
MIN_ROUNDS, MAX_ROUNDS = 5, 10
#: the kill lands this many seconds after the server listens again
KILL_DELAY = (0.05, 0.6)
#: messages per connection before a polite QUIT and a new connection
PER_CONNECTION = 4
#: messages of the final, kill-free phase (each must get 250)
FINAL_MESSAGES = 4
#: bodies above this many bytes are spooled to a file by the server
SIZE_THRESHOLD = 64 * 1024
#: body sizes of the stream (bytes, roughly) and how often each is picked
SIZES, SIZE_WEIGHTS = (0, 20_000, 200_000), (5, 2, 3)
#: RLIMIT_FSIZE of the disk-full server and the size of the body that must not fit
FILE_LIMIT, BIG_BODY = 256 * 1024, 400 * 1024


def body_of(size: int, token: str) -> str:
    """A body of about ``size`` bytes (``message()`` appends the ``token=`` line)."""
    if size == 0:
        return "Hello.\r\n"
    line = f"line {{:06d}} of {token}, padding to make the body bigger ...\r\n"
    return "".join(line.format(n) for n in range(size // len(line.format(0)) + 1))


def stored_body(body: str, token: str) -> bytes:
    """The body as it must be stored: LF line endings, ending with the ``token=`` line."""
    return (body + f"token={token}\r\n").replace("\r\n", "\n").encode()


def subject_of(raw: bytes) -> str:
    """The Subject of a stored message (the token), or ""."""
    subjects = header_of(raw.replace(b"\r\n", b"\n"), "Subject")
    return subjects[0] if subjects else ""


def seed_from_env() -> int:
    fixed = os.environ.get("QPT_DURABILITY_SEED")
    return int(fixed) if fixed else random.SystemRandom().randrange(1 << 32)


class Daemon(Server):
    """The server subprocess, restartable in the same working directory on a fixed port.

    Unlike :class:`tests.test_e2e.Server` it appends to ``server.out`` and
    ``server.err`` (the log of every run is kept), listens on the port it is
    given, and runs ``preexec_fn`` in the child before the exec (resource
    limits, dropped privileges).
    """

    def __init__(self, case: unittest.TestCase, cwd: Path, config: Path, port: int | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.cwd = cwd
        self.port = free_port() if port is None else port
        self.stdout_path = cwd / "server.out"
        self.stderr_path = cwd / "server.err"
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "qpsmtpd", "--config", str(config),
                "--port", f"tcp:{self.port}:interface=127.0.0.1"]
        env = dict(os.environ)
        env.pop("RELAYCLIENT", None)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            env=env, preexec_fn=preexec_fn)
        case.addCleanup(self.stop)
        self.wait_listening()

    def client(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
        smtp.ehlo("client.test")
        return smtp

    def shutdown(self) -> None:
        """A clean stop (SIGTERM), bounded; SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(15)


@dataclass
class Sent:
    """One message of the stream and what the client saw."""

    token: str
    body: str
    outcome: str
    detail: str
    round: int


def transmit(client: smtplib.SMTP, rcpt: str, token: str, body: str) -> tuple[str, str]:
    """Send one message; (outcome, what the client saw)."""
    try:
        client.sendmail(SENDER, [rcpt], message(token, sender=SENDER, rcpt=rcpt, body=body))
    except smtplib.SMTPRecipientsRefused as err:
        return REFUSED, f"RCPT refused: {err.recipients}"
    except smtplib.SMTPResponseException as err:  # SMTPSenderRefused, SMTPDataError, ...
        if 400 <= err.smtp_code < 600:
            return REFUSED, f"{err.smtp_code} {err.smtp_error!r}"
        return UNKNOWN, f"unparsable reply {err.smtp_code} {err.smtp_error!r}"
    except (smtplib.SMTPServerDisconnected, OSError) as err:  # ConnectionError, timeouts
        return UNKNOWN, f"{type(err).__name__}: {err}"
    return ACCEPTED, "250"


class KillHarness:
    """Streams messages at a server that is SIGKILLed at random moments and restarted.

    ``start()`` must return a listening :class:`Daemon` on ``self.port``;
    ``run()`` does the kill rounds and the final clean phase and records
    every message in ``sent``; ``verify(copies)`` checks the stored copies.
    """

    def __init__(self, case: unittest.TestCase, cwd: Path, config: Path, rcpt: str) -> None:
        self.case = case
        self.cwd = cwd
        self.config = config
        self.rcpt = rcpt
        self.port = free_port()
        self.seed = seed_from_env()
        self.rng = random.Random(self.seed)
        self.prefix = f"dur{uuid.uuid4().hex[:8]}x"
        self.sent: dict[str, Sent] = {}
        self.rounds = 0
        self.kills: list[float] = []
        self.deadline = time.monotonic() + BUDGET
        self.server: Daemon | None = None

    def fail(self, why: str) -> None:
        server_log = self.server.output()[-3000:] if self.server is not None else ""
        raise AssertionError(f"seed={self.seed} (QPT_DURABILITY_SEED to repeat): {why}\n"
                             f"{self.summary()}\nserver output (tail):\n{server_log}")

    def summary(self) -> str:
        counts = Counter(sent.outcome for sent in self.sent.values())
        return (f"{self.rounds} kill rounds, delays {[round(d, 3) for d in self.kills]}, "
                f"outcomes {dict(counts)}")

    def start(self) -> Daemon:
        self.server = Daemon(self.case, self.cwd, self.config, port=self.port)
        return self.server

    def next_message(self) -> tuple[str, str]:
        token = f"{self.prefix}{len(self.sent):04d}"
        size = self.rng.choices(SIZES, weights=SIZE_WEIGHTS)[0]
        return token, body_of(size, token)

    def connect(self, server: Daemon) -> smtplib.SMTP | None:
        """A new session, or None if the server is gone (no message was sent)."""
        client = None
        try:
            client = smtplib.SMTP("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
            code, _ = client.ehlo("client.test")
            if code == 250:
                return client
        except OSError:
            pass
        if client is not None:
            client.close()
        time.sleep(0.01)
        return None

    def stream_until_dead(self, server: Daemon) -> None:
        """Send messages until the server process has died."""
        client: smtplib.SMTP | None = None
        on_connection = 0
        try:
            while server.process.poll() is None:
                if time.monotonic() > self.deadline:
                    server.stop()
                    self.fail("the time budget ran out while streaming")
                if client is None:
                    client, on_connection = self.connect(server), 0
                    continue
                token, body = self.next_message()
                outcome, detail = transmit(client, self.rcpt, token, body)
                self.sent[token] = Sent(token, body, outcome, detail, self.rounds)
                on_connection += 1
                if outcome != ACCEPTED or on_connection >= PER_CONNECTION:
                    if outcome == ACCEPTED:
                        try:
                            client.quit()
                        except OSError:
                            pass
                    client.close()
                    client = None
        finally:
            if client is not None:
                client.close()

    def run(self) -> None:
        """The kill rounds, then the final clean phase; the server is stopped at the end."""
        while self.rounds < MAX_ROUNDS:
            in_flight = any(sent.outcome == UNKNOWN for sent in self.sent.values())
            accepted = any(sent.outcome == ACCEPTED for sent in self.sent.values())
            if self.rounds >= MIN_ROUNDS and in_flight and accepted:
                break
            if time.monotonic() > self.deadline:
                self.fail("the time budget ran out before the kill rounds were done")
            server = self.start()
            delay = self.rng.uniform(*KILL_DELAY)
            timer = threading.Timer(delay, server.signal, (signal.SIGKILL,))
            timer.start()
            try:
                self.stream_until_dead(server)
            finally:
                timer.cancel()
                timer.join()
            returncode = server.process.wait(15)
            if returncode != -signal.SIGKILL:
                self.fail(f"round {self.rounds}: the server ended with {returncode}, not by our SIGKILL")
            self.kills.append(delay)
            self.rounds += 1
        if not any(sent.outcome == UNKNOWN for sent in self.sent.values()):
            self.fail("no kill landed while a message was in flight")
        server = self.start()
        client = server.client()
        for _ in range(FINAL_MESSAGES):
            token, body = self.next_message()
            outcome, detail = transmit(client, self.rcpt, token, body)
            self.sent[token] = Sent(token, body, outcome, detail, self.rounds)
            if outcome != ACCEPTED:
                self.fail(f"the final phase (no kills) did not accept {token}: {outcome} {detail}")
        client.quit()
        server.shutdown()

    def accepted(self) -> list[str]:
        return [token for token, sent in self.sent.items() if sent.outcome == ACCEPTED]

    def verify(self, copies: list[bytes], foreign: bool = False) -> None:
        """Check the stored ``copies`` against the outcomes.

        ``foreign``: the store is shared, so ignore messages whose token is
        not of this run (other tests' mail); otherwise anything unknown fails.
        """
        problems: list[str] = []
        found: Counter[str] = Counter()
        for raw in copies:
            normal = raw.replace(b"\r\n", b"\n")
            _, _, body = normal.partition(b"\n\n")
            token = subject_of(normal)
            if token not in self.sent:
                if not foreign or token.startswith(self.prefix):
                    problems.append(f"stored message was never sent: Subject {token!r}, {normal[:200]!r}")
                continue
            found[token] += 1
            expected = stored_body(self.sent[token].body, token)
            if body != expected:
                problems.append(f"{token}: stored copy is incomplete or altered ({len(body)} of "
                                f"{len(expected)} body bytes, ends with {body[-60:]!r})")
        for token, sent in self.sent.items():
            count = found[token]
            wrong = ((sent.outcome == ACCEPTED and count != 1) or (sent.outcome == REFUSED and count != 0)
                     or (sent.outcome == UNKNOWN and count > 1))
            if wrong:
                problems.append(f"{token} ({sent.outcome} in round {sent.round}: {sent.detail}) "
                                f"is stored {count} times")
        if problems:
            self.fail("\n".join(problems))
        accepted = self.accepted()
        if len(accepted) < FINAL_MESSAGES + 1:
            self.fail(f"too few messages were accepted to mean anything: {len(accepted)}")


class KillTests(E2EBase):
    """SIGKILL at random points of a stream of deliveries: no 250 is lost or doubled."""

    def harness(self, plugins: str, rcpt: str = "bob@localhost", **files: str) -> KillHarness:
        cwd = self.workdir()
        config = self.config(cwd, plugins=plugins, size_threshold=f"{SIZE_THRESHOLD}\n", **files)
        harness = KillHarness(self, cwd, config, rcpt)
        harness.run()
        # the last start removed the spool files the kills left; the final phase closed its own
        spool = cwd / "spool" / "tmp"
        self.assertEqual(sorted(spool.iterdir()) if spool.is_dir() else [], [])
        return harness

    def test_maildir(self) -> None:
        harness = self.harness("rcpt_ok\nqueue/maildir spool/maildir\n")
        maildir = harness.cwd / "spool" / "maildir"
        new = sorted((maildir / "new").iterdir())
        harness.verify([path.read_bytes() for path in new])
        # a kill may leave a partial file in tmp/ (the Maildir convention allows it, readers never look
        # there); deliver() renames tmp/NAME to new/NAME, so a delivered name in tmp/ may only ever
        # be a second name of the *same* file, never a second copy
        names = {path.name: path for path in new}
        for leftover in (maildir / "tmp").iterdir():
            twin = names.get(leftover.name)
            if twin is not None and not os.path.samefile(twin, leftover):
                harness.fail(f"tmp/{leftover.name} is a separate file with the name of a delivered one")

    def test_sql(self) -> None:
        harness = self.harness("rcpt_ok\nqueue/sql\n")
        database = harness.config / "queue.sqlite"
        # the server was stopped: any journal (rollback or WAL) it left is recovered on open
        connection = sqlite3.connect(database, timeout=15)
        try:
            rows = connection.execute("SELECT message_id, headers, body FROM messages").fetchall()
        finally:
            connection.close()
        copies = []
        for message_id, headers, body in rows:
            raw = bytes(headers) + bytes(body)
            if f"<{subject_of(raw)}@example.org>" != message_id:
                harness.fail(f"row with message_id {message_id!r} does not match its headers {raw[:300]!r}")
            copies.append(raw)
        harness.verify(copies)

    def test_smtp_forward(self) -> None:
        postfix = shared_postfix()  # SkipTest with the reason if Postfix cannot run here
        harness = self.harness(f"rcpt_ok\nqueue/smtp-forward 127.0.0.1:{postfix.port} starttls=no\n",
                               rcpt="bob@example.test", rcpthosts="example.test\n")
        postfix.flush()

        def arrived() -> bool:
            subjects = {subject_of(raw) for raw in postfix.delivered("bob")}
            return subjects.issuperset(harness.accepted())

        try:
            wait_for(arrived, "Postfix to deliver every accepted message", timeout=30)
        except AssertionError as err:
            harness.fail(f"{err}\nPostfix log (tail):\n{postfix.log()[-3000:]}")
        time.sleep(1.0)  # let late copies (UNKNOWN messages, or a duplicate) arrive too
        harness.verify(postfix.delivered("bob"), foreign=True)


# -- storage errors ----------------------------------------------------------------------------------

_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # resolved here, not after the fork
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
#: the log lines of a failed spool write (qptwisted.smtp.session) and of a failed Maildir delivery
SPOOL_FAILED = "[qptwisted#error] cannot store message: [Errno "
QUEUE_FAILED = "[qptwisted#error] [queue/maildir] delivery failed: [Errno "
PROBE = ("import sys, qptwisted, twisted.scripts.twistd\n"
         "try:\n    open(sys.argv[1] + '/probe', 'w')\n"
         "except PermissionError:\n    sys.exit(0)\n"
         "sys.exit(3)\n")


def limit_file_size() -> None:
    """Child side: writes beyond FILE_LIMIT fail with EFBIG (Python ignores SIGXFSZ)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def drop_dac_override() -> None:
    """Child side: root without the capabilities that bypass file permissions (after the exec)."""
    if _PRCTL is None:
        raise OSError("no prctl() in the C library")
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if _PRCTL(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def as_user(uid: int, gid: int) -> Callable[[], None]:
    def demote() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return demote


@dataclass
class Unprivileged:
    """How to run the server so that file permissions apply to it."""

    how: str
    preexec_fn: Callable[[], None] | None
    uid: int
    gid: int


def unprivileged(cwd: Path) -> Unprivileged:
    """A way to run the server in ``cwd`` that mode 0555 stops, checked by a probe; else SkipTest.

    Not root: as is. Root: first root without ``CAP_DAC_OVERRIDE``, then the
    user ``nobody`` (``cwd`` is given to it; the interpreter and the checkout
    must be readable by it).
    """
    candidates = [Unprivileged("the current user", None, os.getuid(), os.getgid())]
    if os.geteuid() == 0:
        candidates = [Unprivileged("root without CAP_DAC_OVERRIDE", drop_dac_override, 0, 0)]
        try:
            nobody = pwd.getpwnam("nobody")
            candidates.append(Unprivileged("user nobody", as_user(nobody.pw_uid, nobody.pw_gid),
                                           nobody.pw_uid, nobody.pw_gid))
        except KeyError:
            pass
    reasons = []
    for candidate in candidates:
        probe = cwd / "probe"
        probe.mkdir(exist_ok=True)
        for path in (cwd, *cwd.rglob("*")):
            os.chown(path, candidate.uid, candidate.gid)
        probe.chmod(0o555)
        try:
            run = subprocess.run([sys.executable, "-c", PROBE, str(probe)], cwd=cwd, capture_output=True,
                                 text=True, timeout=30, preexec_fn=candidate.preexec_fn)
        except (OSError, subprocess.SubprocessError) as err:
            reasons.append(f"{candidate.how}: cannot start: {err}")
            continue
        finally:
            probe.chmod(0o755)
        if run.returncode == 0:
            return candidate
        if run.returncode == 3:
            reasons.append(f"{candidate.how}: can still write into a mode-0555 directory")
        else:
            last = (run.stderr.strip().splitlines() or ["exit status " + str(run.returncode)])[-1]
            reasons.append(f"{candidate.how}: cannot run the server ({last})")
    raise unittest.SkipTest("no way to run the server subject to file permissions: " + "; ".join(reasons))


class StorageErrorTests(E2EBase):
    """A full disk or a permission error while spooling or queuing: 452, a log line, still serving."""

    def attempt(self, server: Server, token: str, body: str = "Hello.\r\n",
                rcpt: str = "bob@localhost") -> tuple[int, bytes]:
        """MAIL, RCPT (both must get 250) and DATA on a new connection; the reply to the message."""
        client = smtplib.SMTP("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
        try:
            client.ehlo("client.test")
            self.assertEqual(client.mail(SENDER)[0], 250)
            self.assertEqual(client.rcpt(rcpt)[0], 250)
            return client.data(message(token, sender=SENDER, rcpt=rcpt, body=body))
        finally:
            client.close()

    def assertRefused(self, reply: tuple[int, bytes], status: bytes, text: bytes, server: Server) -> None:
        code, reply_text = reply
        self.assertEqual(code, 452, f"{reply!r}\n{server.output()[-3000:]}")
        self.assertIn(status, reply_text)
        self.assertIn(text, reply_text)

    def assertLogged(self, server: Server, *parts: str) -> None:
        def logged() -> bool:
            return any(all(part in line for part in parts) for line in server.output().splitlines())

        wait_for(logged, f"a log line with {parts}", timeout=10)

    def assertOnlyDelivered(self, server: Server, tokens: list[str]) -> None:
        maildir = server.cwd / "spool" / "maildir"
        delivered = [subject_of(raw) for raw in server.delivered()]
        self.assertEqual(sorted(delivered), sorted(tokens))
        for raw in server.delivered():
            token = subject_of(raw)
            self.assertTrue(raw.endswith(f"token={token}\n".encode()), raw[-200:])
        def nothing_left() -> bool:
            return not any((maildir / "tmp").iterdir()) and not any((server.cwd / "spool" / "tmp").iterdir())

        # the spool file goes when the transaction ends, a moment after the 250 left: wait, bounded
        wait_for(nothing_left, "no file left in the Maildir's tmp/ or the spool", timeout=10)

    def full_disk_server(self, size_threshold: int) -> Daemon:
        cwd = self.workdir()
        config = self.config(cwd, plugins="rcpt_ok\nqueue/maildir spool/maildir\n",
                             size_threshold=f"{size_threshold}\n")
        for path in ("spool/tmp", "spool/maildir/tmp", "spool/maildir/new", "spool/maildir/cur"):
            (cwd / path).mkdir(parents=True)
        return Daemon(self, cwd, config, preexec_fn=limit_file_size)

    def check_full_disk(self, size_threshold: int, token: str, status: bytes, text: bytes, log: str) -> None:
        """A body that cannot be written gets 452 and a log line; the next message is accepted."""
        server = self.full_disk_server(size_threshold)
        reply = self.attempt(server, token, body=body_of(BIG_BODY, token))
        self.assertRefused(reply, status, text, server)
        self.assertLogged(server, log, "File too large")
        reply = self.attempt(server, f"small-after-{token}")
        self.assertEqual(reply[0], 250, reply)
        self.assertIsNone(server.process.poll())
        self.assertOnlyDelivered(server, [f"small-after-{token}"])

    def test_disk_full_while_spooling(self) -> None:
        # a small threshold: the body goes to a spool file, which cannot grow enough
        self.check_full_disk(1024, "too-big-to-spool", b"4.3.1", b"Insufficient system storage", SPOOL_FAILED)

    def test_disk_full_while_queuing(self) -> None:
        # the body stays in memory; the Maildir file cannot grow enough
        self.check_full_disk(4 << 20, "too-big-to-queue", b"4.3.0", b"Queue error", QUEUE_FAILED)

    def test_permission_denied_while_spooling_and_queuing(self) -> None:
        cwd = self.workdir()
        config = self.config(cwd, plugins="rcpt_ok\nqueue/maildir spool/maildir\n", size_threshold="1024\n")
        spool, new = cwd / "spool" / "tmp", cwd / "spool" / "maildir" / "new"
        for path in (spool, new.with_name("tmp"), new, new.with_name("cur")):
            path.mkdir(parents=True)
        self.addCleanup(spool.chmod, 0o755)
        self.addCleanup(new.chmod, 0o755)
        runner = unprivileged(cwd)
        server = Daemon(self, cwd, config, preexec_fn=runner.preexec_fn)
        pid = server.process.pid
        big = "x" * 70 + "\r\n"  # 8 KB: above size_threshold, so the body goes to a spool file

        spool.chmod(0o555)
        reply = self.attempt(server, "spool-denied", body=big * 110)
        self.assertRefused(reply, b"4.3.1", b"Insufficient system storage", server)
        self.assertLogged(server, SPOOL_FAILED, "Permission denied")
        spool.chmod(0o755)

        new.chmod(0o555)
        reply = self.attempt(server, "queue-denied")
        self.assertRefused(reply, b"4.3.0", b"Queue error", server)
        self.assertLogged(server, QUEUE_FAILED, "Permission denied")
        new.chmod(0o755)

        self.assertEqual(self.attempt(server, "small-after-denied")[0], 250, f"as {runner.how}")
        self.assertEqual(self.attempt(server, "big-after-denied", body=big * 110)[0], 250)
        self.assertEqual(server.process.pid, pid)
        self.assertIsNone(server.process.poll())
        self.assertOnlyDelivered(server, ["small-after-denied", "big-after-denied"])
