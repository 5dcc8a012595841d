"""MAIL/RCPT parameters: DSN (RFC 3461), unknown parameters (RFC 5321 4.1.1.11), LIMITS (RFC 9422),
REQUIRETLS (RFC 8689)."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from qptwisted import DECLINED, OK, HookAnswer, Plugin, TLSInfo, Transaction
from qptwisted.mail.dsn import DSNError, MessageDSN, RecipientDSN, decode_xtext, xtext
from qptwisted.testing import make_engine

from .core_support import CaptureQueue, Dialogue


class XtextTests(unittest.SynchronousTestCase):
    def test_rfc3461_xtext_round_trip(self) -> None:
        for value in ("plain", "a+b=c", "sp ace", "ünï", "<id@host>"):
            self.assertEqual(decode_xtext(xtext(value)), value)
        self.assertEqual(xtext("a+b=c d"), "a+2Bb+3Dc+20d")

    def test_rfc3461_not_xtext(self) -> None:
        for bad in ("a=b", "a+2", "a+ZZ", "sp ace", "tab\t"):
            self.assertRaises(DSNError, decode_xtext, bad)

    def test_notify_values(self) -> None:
        self.assertEqual(RecipientDSN.from_params({"notify": "success,Failure"}).notify,  # type: ignore[union-attr]
                         ("SUCCESS", "FAILURE"))
        self.assertEqual(RecipientDSN.from_params({"notify": "never"}).notify, ("NEVER",))  # type: ignore[union-attr]
        for bad in ("NEVER,SUCCESS", "SUCCESS,SUCCESS", "", "SOMETIMES", None):
            self.assertRaises(DSNError, RecipientDSN.from_params, {"notify": bad})

    def test_orcpt_values(self) -> None:
        dsn = RecipientDSN.from_params({"orcpt": "rfc822;b+2Bx@example.com"})
        assert dsn is not None
        self.assertEqual(dsn.orcpt, ("rfc822", "b+2Bx@example.com"))
        self.assertEqual(dsn.original_recipient, "b+x@example.com")
        self.assertEqual(dsn.params(), ["ORCPT=rfc822;b+2Bx@example.com"])
        for bad in ("b@example.com", "rfc822;", ";b@x", "rfc822;a=b", "rfc822;" + "x" * 600):
            self.assertRaises(DSNError, RecipientDSN.from_params, {"orcpt": bad})

    def test_ret_and_envid(self) -> None:
        dsn = MessageDSN.from_params({"ret": "hdrs", "envid": "QQ+2B314"})
        self.assertEqual(dsn, MessageDSN("HDRS", "QQ+314"))
        self.assertEqual(dsn.params(), ["RET=HDRS", "ENVID=QQ+2B314"])  # type: ignore[union-attr]
        self.assertIsNone(MessageDSN.from_params({"size": "10"}))
        for bad in ({"ret": "ALL"}, {"ret": None}, {"envid": ""}, {"envid": "x" * 101}, {"envid": "a+0Ab"}):
            self.assertRaises(DSNError, MessageDSN.from_params, bad)


class Offers(Plugin):
    """Offers an extension of its own (X-PRIORITY) and keeps what the hooks saw."""

    name = "test_offers"

    def register(self, *args: str) -> None:
        self.seen: list[tuple[str, Any]] = []

    def hook_ehlo(self, transaction: Transaction, host: str) -> HookAnswer:
        transaction.notes.setdefault("capabilities", []).append("X-PRIORITY 1 2 3")
        return DECLINED

    def hook_mail(self, transaction: Transaction, sender: Any, **params: Any) -> HookAnswer:
        self.seen.append(("mail", (transaction.dsn, transaction.body_type, transaction.requiretls, params)))
        return DECLINED

    def hook_rcpt(self, transaction: Transaction, rcpt: Any, **params: Any) -> HookAnswer:
        self.seen.append(("rcpt", rcpt.dsn))
        return OK


class Base(unittest.SynchronousTestCase):
    def dialogue(self, config: dict[str, Any] | None = None, hello: bool = True) -> Dialogue:
        self.engine = make_engine([Offers, CaptureQueue], config=config)
        self.offers, self.queue = self.engine.plugins
        d = Dialogue(self.engine)
        self.addCleanup(d.close)
        if hello:
            d.send("EHLO client.test")
        return d


class DSNTests(Base):
    def test_rfc3461_dsn_advertised(self) -> None:
        d = self.dialogue(hello=False)
        self.assertIn("DSN", d.send("EHLO client.test")[0][2].split("\n"))

    def test_rfc3461_parameters_kept_on_transaction_and_recipients(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> RET=HDRS ENVID=QQ314159")[0][0], 250)
        rcpt = "RCPT TO:<b@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b@example.com"
        self.assertEqual(d.send(rcpt)[0][0], 250)
        self.assertEqual(d.send("RCPT TO:<c@example.com>")[0][0], 250)
        transaction = d.session.transaction
        self.assertEqual(transaction.dsn, MessageDSN("HDRS", "QQ314159"))
        first, second = transaction.recipients
        self.assertEqual(first.dsn, RecipientDSN(("SUCCESS", "DELAY"), ("rfc822", "b@example.com")))
        self.assertIsNone(second.dsn)
        self.assertEqual(self.offers.seen[1], ("rcpt", first.dsn))

    def test_rfc3461_bad_dsn_parameters_are_501(self) -> None:
        d = self.dialogue()
        for bad in ("RET=ALL", "ENVID=a=b", "RET=FULL RET=HDRS"):
            self.assertEqual(d.send(f"MAIL FROM:<a@sender.test> {bad}")[0][:2], (501, "5.5.4"), bad)
        d.send("MAIL FROM:<a@sender.test>")
        for bad in ("NOTIFY=NEVER,DELAY", "NOTIFY=", "ORCPT=b@example.com"):
            self.assertEqual(d.send(f"RCPT TO:<b@example.com> {bad}")[0][:2], (501, "5.5.4"), bad)
        self.assertEqual(d.session.transaction.recipients, [])


class UnknownParameterTests(Base):
    def test_rfc5321_4_1_1_11_unknown_parameters_are_555(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> FOO=bar")[0],
                         (555, "5.5.4", "Unsupported parameter FOO"))
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> SIZE=10")[0][0], 250)
        self.assertEqual(d.send("RCPT TO:<b@example.com> RET=FULL")[0][:2], (555, "5.5.4"))
        self.assertEqual(self.offers.seen[0][0], "mail")
        self.assertEqual(len(self.offers.seen), 1)

    def test_a_parameter_named_like_a_plugin_extension_reaches_the_plugin(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> X-PRIORITY=2")[0][0], 250)
        self.assertEqual(self.offers.seen[0][1][3], {"x-priority": "2"})

    def test_flags_take_no_value(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> SMTPUTF8=yes")[0][:2], (501, "5.5.4"))

    def test_auth_parameter_of_rfc4954_is_accepted(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> AUTH=<>")[0][0], 250)


class LimitsTests(Base):
    def test_rfc9422_limits_advertised_from_the_configuration(self) -> None:
        d = self.dialogue({"max_recipients": "50", "max_messages": "3"}, hello=False)
        self.assertIn("LIMITS RCPTMAX=50 MAILMAX=3", d.send("EHLO client.test")[0][2].split("\n"))

    def test_mailmax_is_kept(self) -> None:
        d = self.dialogue({"max_messages": "2"})
        for _ in range(2):
            self.assertEqual(d.send("MAIL FROM:<a@sender.test>")[0][0], 250)
            d.send("RSET")
        self.assertEqual(d.send("MAIL FROM:<a@sender.test>")[0][:2], (421, "4.7.0"))
        self.assertTrue(d.closed)

    def test_rcptmax_is_kept(self) -> None:
        d = self.dialogue({"max_recipients": "2"})
        d.send("MAIL FROM:<a@sender.test>")
        codes = [d.send(f"RCPT TO:<r{n}@example.com>")[0][:2] for n in range(3)]
        self.assertEqual(codes, [(250, "2.1.5"), (250, "2.1.5"), (452, "4.5.3")])


class RequireTLSTests(Base):
    def test_rfc8689_requiretls_refused_without_tls_and_not_advertised(self) -> None:
        d = self.dialogue(hello=False)
        self.assertNotIn("REQUIRETLS", d.send("EHLO client.test")[0][2].split("\n"))
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> REQUIRETLS")[0][:2], (530, "5.7.10"))

    def test_rfc8689_requiretls_over_tls_is_kept_on_the_transaction(self) -> None:
        d = self.dialogue(hello=False)
        d.session.connection.tls = TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
        self.assertIn("REQUIRETLS", d.send("EHLO client.test")[0][2].split("\n"))
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> REQUIRETLS")[0][0], 250)
        self.assertTrue(d.session.transaction.requiretls)
        d.send("RSET")
        self.assertFalse(d.session.transaction.requiretls)
