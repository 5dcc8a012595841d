"""rcpt_ok: the recipient gate (rcpthosts, me, postmaster, relay clients)."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from qptwisted import DENY, OK, Address, Code
from qptwisted.testing import SMTPDialogue, make_connection, make_engine, make_transaction, run_hook

CONFIG = {"me": "mx.example.net", "rcpthosts": ["# our domains", "example.com", ".sub.example.org"]}


class RcptOkHookTests(unittest.TestCase):
    def setUp(self) -> None:
        self.engine = make_engine(["rcpt_ok"], config=CONFIG)

    def rcpt(self, address: str, **connection: Any) -> tuple[Code, str | None]:
        transaction = make_transaction(self.engine, make_connection(remote_ip="192.0.2.1", **connection),
                                       sender="<a@example.org>")
        result = self.successResultOf(run_hook(self.engine, "rcpt", transaction,
                                               Address.parse(address, allow_postmaster=True)))
        return result.code, result.message

    def test_local_domain_any_case(self) -> None:
        self.assertEqual(self.rcpt("<bob@example.com>")[0], OK)
        self.assertEqual(self.rcpt("<Bob@EXAMPLE.Com>")[0], OK)

    def test_dot_entry_matches_subdomains_only(self) -> None:
        self.assertEqual(self.rcpt("<x@a.sub.example.org>")[0], OK)
        self.assertEqual(self.rcpt("<x@deep.a.SUB.example.org>")[0], OK)
        self.assertEqual(self.rcpt("<x@sub.example.org>")[0], DENY)
        self.assertEqual(self.rcpt("<x@notsub.example.org>")[0], DENY)

    def test_me_is_local(self) -> None:
        self.assertEqual(self.rcpt("<root@mx.example.net>")[0], OK)
        self.assertEqual(self.rcpt("<root@MX.example.NET>")[0], OK)

    def test_bare_postmaster(self) -> None:
        self.assertEqual(self.rcpt("<postmaster>")[0], OK)
        self.assertEqual(self.rcpt("<Postmaster>")[0], OK)

    def test_foreign_domain_is_relaying_denied(self) -> None:
        self.assertEqual(self.rcpt("<x@elsewhere.example>"), (DENY, "Relaying denied (#5.7.1)"))
        self.assertEqual(self.rcpt("<postmaster@elsewhere.example>")[0], DENY)
        self.assertEqual(self.rcpt("<x@example.com.evil.example>")[0], DENY)

    def test_relay_client_may_send_anywhere(self) -> None:
        self.assertEqual(self.rcpt("<x@elsewhere.example>", relay_client=True)[0], OK)

    def test_whitelisted_host_or_sender(self) -> None:
        self.assertEqual(self.rcpt("<x@elsewhere.example>", notes={"whitelisthost": 1})[0], OK)
        transaction = make_transaction(self.engine, sender="<a@example.org>")
        transaction.notes["whitelistsender"] = True
        result = self.successResultOf(run_hook(self.engine, "rcpt", transaction,
                                               Address.parse("<x@elsewhere.example>")))
        self.assertEqual(result.code, OK)


class RcptOkDialogueTests(unittest.TestCase):
    def test_dialogue_replies(self) -> None:
        smtp = SMTPDialogue(make_engine(["rcpt_ok", "queue/discard"], config=CONFIG))
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(smtp.send("RCPT TO:<bob@Example.COM>")[0][0], 250)
        self.assertEqual(smtp.send("RCPT TO:<x@elsewhere.example>"),
                         [(550, "5.7.1", "Relaying denied (#5.7.1)")])
        smtp.close()

    def test_rcpthosts_is_read_at_load(self) -> None:
        engine = make_engine(["rcpt_ok"], config={"me": "mx.test", "rcpthosts": []})
        transaction = make_transaction(engine, sender="<a@example.org>")
        result = self.successResultOf(run_hook(engine, "rcpt", transaction, Address.parse("<b@example.com>")))
        self.assertEqual(result.code, DENY)
