"""SMTP AUTH in the engine (RFC 4954): SASL PLAIN, LOGIN, CRAM-MD5 and their failures.

In-memory dialogues; ``tls_before_auth 0`` stands in for a TLS connection
(the TLS side is tested over real loopback TLS in ``test_tls``).
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.trial import unittest

from qptwisted import DENY, DENYSOFT, OK, HookAnswer, Plugin, Transaction
from qptwisted.lib.sasl import cram_md5_digest, cram_md5_matches
from qptwisted.testing import SMTPDialogue, make_engine

USER, SECRET = "good@example.com", "s3cret pass"


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def plain(user: str, password: str, authzid: str = "") -> str:
    """The PLAIN response, base64."""
    return b64(f"{authzid}\0{user}\0{password}")


class Checker(Plugin):
    """The generic ``auth`` hook: one user, one secret."""

    name = "test_auth_checker"

    def hook_auth(self, transaction: Transaction, mechanism: str, user: str, password: str | None,
                  digest: str | None, ticket: str | None) -> HookAnswer:
        if user == "soft@example.com":
            return DENYSOFT
        if user != USER:
            return DENY, "unknown user"
        if mechanism == "cram-md5":
            return OK if cram_md5_matches(SECRET, ticket or "", digest or "") else DENY
        return OK if password == SECRET else (DENY, "wrong password")


class LogCapture(Plugin):
    """Keeps every log line."""

    name = "test_auth_logs"
    lines: list[str] = []

    def hook_logging(self, transaction: Any, level: int, hook: Any, plugin: Any, message: str) -> None:
        type(self).lines.append(message)


class Capture(Plugin):
    """A queue that keeps the message."""

    name = "test_auth_queue"
    messages: list[bytes] = []

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        type(self).messages.append(transaction.message_bytes())
        return OK


class AuthTests(unittest.SynchronousTestCase):
    def dialogue(self, **config: str) -> SMTPDialogue:
        LogCapture.lines = []
        Capture.messages = []
        settings = {"tls_before_auth": "0", "rcpthosts": "mx.test"}
        settings.update(config)
        engine = make_engine([LogCapture, Checker, "rcpt_ok", Capture], config=settings)
        smtp = SMTPDialogue(engine, remote_ip="192.0.2.9")
        self.addCleanup(smtp.close)
        return smtp

    def ehlo(self, smtp: SMTPDialogue) -> str:
        [(code, _, text)] = smtp.send("EHLO client.test")
        self.assertEqual(code, 250)
        return text

    def test_ehlo_lists_mechanisms(self) -> None:
        smtp = self.dialogue()
        self.assertIn("AUTH PLAIN LOGIN CRAM-MD5", self.ehlo(smtp).splitlines())

    def test_plain_initial_response(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        [(code, enhanced, text)] = smtp.send(f"AUTH PLAIN {plain(USER, SECRET)}")
        self.assertEqual((code, enhanced, text),
                         (235, "2.7.0", f"PLAIN authentication successful for {USER}"))
        connection = smtp.session.connection
        self.assertEqual((connection.auth_user, connection.auth_mechanism, connection.relay_client),
                         (USER, "PLAIN", True))

    def test_plain_continuation(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        self.assertEqual(smtp.send("AUTH PLAIN"), [(334, None, "")])
        self.assertEqual(smtp.send_raw(b"334  \r\n")[0][0], 501)  # junk is bad base64 ...
        self.assertEqual(smtp.send("AUTH PLAIN"), [(334, None, "")])
        self.assertEqual(smtp.send(plain(USER, SECRET, USER))[0][0], 235)  # authzid == authcid

    def test_plain_raw_reply_has_two_spaces(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        smtp.protocol.dataReceived(b"AUTH PLAIN\r\n")
        self.assertEqual(smtp.transport.value(), b"334 \r\n")

    def test_login(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        self.assertEqual(smtp.send("AUTH LOGIN"), [(334, None, b64("Username:"))])
        self.assertEqual(smtp.send(b64(USER)), [(334, None, b64("Password:"))])
        self.assertEqual(smtp.send(b64(SECRET))[0][0], 235)

    def test_login_initial_user(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        self.assertEqual(smtp.send(f"AUTH LOGIN {b64(USER)}"), [(334, None, b64("Password:"))])
        self.assertEqual(smtp.send(b64(SECRET))[0][0], 235)

    def test_cram_md5(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        [(code, _, challenge)] = smtp.send("AUTH CRAM-MD5")
        self.assertEqual(code, 334)
        ticket = base64.b64decode(challenge).decode()
        self.assertRegex(ticket, r"^<\d+\.\d+@mx\.test>$")
        self.assertEqual(smtp.send(b64(f"{USER} {cram_md5_digest(SECRET, ticket)}"))[0][0], 235)

    def test_cram_md5_wrong(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        smtp.send("AUTH CRAM-MD5")
        self.assertEqual(smtp.send(b64(f"{USER} {'0' * 32}"))[0][0], 535)

    def test_wrong_password_535_and_fail2ban_line(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        [(code, enhanced, text)] = smtp.send(f"AUTH PLAIN {plain(USER, 'wrong-pw')}")
        self.assertEqual((code, enhanced, text), (535, "5.7.8", f"PLAIN authentication failed for {USER}"))
        failures = [line for line in LogCapture.lines if line.startswith("auth failed:")]
        expected = f"auth failed: mechanism=PLAIN user={USER} ip=192.0.2.9 (wrong password)"
        self.assertEqual(failures, [expected])
        self.assertIsNone(smtp.session.connection.auth_user)

    def test_no_credentials_in_logs(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        smtp.send(f"AUTH PLAIN {plain(USER, 'wrong-pw')}")
        smtp.send("AUTH LOGIN", b64(USER), b64(SECRET))
        logs = "\n".join(LogCapture.lines)
        self.assertIn(USER, logs)
        for secret in ("wrong-pw", SECRET, b64(SECRET)):
            self.assertNotIn(secret, logs)

    def test_debug_option_logs_credentials(self) -> None:
        smtp = self.dialogue(auth_debug_credentials="1", loglevel="7")
        self.ehlo(smtp)
        smtp.send(f"AUTH PLAIN {plain(USER, 'wrong-pw')}")
        self.assertIn("wrong-pw", "\n".join(LogCapture.lines))

    def test_authzid_differs(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        [(code, _, _)] = smtp.send(f"AUTH PLAIN {plain(USER, SECRET, 'boss@example.com')}")
        self.assertEqual(code, 535)
        self.assertIsNone(smtp.session.connection.auth_user)

    def test_second_auth(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        smtp.send(f"AUTH PLAIN {plain(USER, SECRET)}")
        self.assertEqual(smtp.send("AUTH LOGIN"), [(503, "5.5.1", "but you already said AUTH ...")])

    def test_unknown_and_missing_mechanism(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        self.assertEqual(smtp.send("AUTH FOO")[0][0], 504)
        self.assertEqual(smtp.send("AUTH")[0][0], 504)

    def test_bad_base64(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        self.assertEqual(smtp.send("AUTH PLAIN !!!notbase64")[0][0], 501)
        smtp.send("AUTH LOGIN")
        self.assertEqual(smtp.send("%%%")[0][0], 501)

    def test_cancel_with_star_answers_501_for_every_mechanism(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        for start in ("AUTH PLAIN", "AUTH LOGIN", "AUTH CRAM-MD5"):
            self.assertEqual(smtp.send(start)[0][0], 334)
            self.assertEqual(smtp.send("*"), [(501, "5.0.0", "Authentication cancelled")], start)
        smtp.send("AUTH LOGIN", b64(USER))
        self.assertEqual(smtp.send("*")[0][0], 501)
        self.assertEqual(smtp.send("NOOP")[0][0], 250)  # the dialogue is over; commands work again

    def test_auth_only_after_ehlo(self) -> None:
        smtp = self.dialogue()
        self.assertEqual(smtp.send("AUTH PLAIN")[0][0], 503)
        smtp.send("HELO client.test")
        self.assertEqual(smtp.send("AUTH PLAIN")[0][0], 503)

    def test_not_during_transaction(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        smtp.send("MAIL FROM:<a@example.org>")
        self.assertEqual(smtp.send("AUTH PLAIN")[0][0], 503)

    def test_temporary_failure_454(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        self.assertEqual(smtp.send(f"AUTH PLAIN {plain('soft@example.com', 'x')}")[0][0], 454)

    def test_too_many_failures_421(self) -> None:
        smtp = self.dialogue(auth_max_failures="2")
        self.ehlo(smtp)
        bad = f"AUTH PLAIN {plain(USER, 'nope')}"
        self.assertEqual(smtp.send(bad)[0][0], 535)
        self.assertFalse(smtp.closed)
        self.assertEqual(smtp.send(bad)[0][0], 421)
        self.assertTrue(smtp.closed)

    def test_tls_before_auth_default(self) -> None:
        LogCapture.lines = []
        smtp = SMTPDialogue(make_engine([Checker]))
        self.addCleanup(smtp.close)
        self.assertNotIn("AUTH", self.ehlo(smtp))
        [(code, _, text)] = smtp.send("AUTH PLAIN")
        self.assertEqual(code, 503)
        self.assertIn("TLS required", text)

    def test_no_auth_plugin_means_unrecognized(self) -> None:
        smtp = SMTPDialogue(make_engine(["rcpt_ok"], config={"tls_before_auth": "0"}))
        self.addCleanup(smtp.close)
        self.assertNotIn("AUTH", self.ehlo(smtp))
        self.assertEqual(smtp.send("AUTH PLAIN")[0][0], 500)

    def test_relaying_and_headers_after_auth(self) -> None:
        smtp = self.dialogue()
        self.ehlo(smtp)
        self.assertEqual(smtp.send("MAIL FROM:<a@example.org>", "RCPT TO:<x@elsewhere.example>")[1][0], 550)
        smtp.send("RSET")
        smtp.send(f"AUTH PLAIN {plain(USER, SECRET)}")
        replies = smtp.deliver(f"<{USER}>", ["<x@elsewhere.example>"], "Subject: hi\n\nbody\n")
        self.assertEqual([code for code, *_ in replies], [250, 250, 354, 250])
        [message] = Capture.messages
        self.assertIn(b"with ESMTPA;", message)
        self.assertIn(f"auth=pass (plain) smtp.auth={USER}".encode(), message)

    def test_auth_parse_hook(self) -> None:
        class Parser(Plugin):
            name = "test_auth_parser"

            def hook_auth_parse(self, transaction: Transaction) -> HookAnswer:
                return OK, lambda rest: rest.replace("MECH=", "").split()

        LogCapture.lines = []
        smtp = SMTPDialogue(make_engine([Parser, Checker], config={"tls_before_auth": "0"}))
        self.addCleanup(smtp.close)
        self.ehlo(smtp)
        self.assertEqual(smtp.send("AUTH MECH=LOGIN"), [(334, None, b64("Username:"))])
