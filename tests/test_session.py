"""Verbs and state (reference §4, §13.2, §15 items 1-7, 13 and 20)."""

from __future__ import annotations

import re
from typing import Any

from twisted.trial import unittest

from qptwisted import (
    DECLINED,
    DENY,
    DENYSOFT,
    OK,
    Address,
    HookAnswer,
    Plugin,
    Reply,
    Transaction,
    __version__,
)
from qptwisted.testing import make_engine

from .core_support import CaptureQueue, Dialogue

IP = "192.0.2.1"
HI = f"mx.test Hi [{IP}] [{IP}]"


class Recorder(Plugin):
    """Records the arguments of envelope hooks; can add an EHLO capability."""

    name = "test_recorder"

    def register(self, *args: str) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.capability: str | None = None
        self.on_queue_post: Any = None

    def hook_ehlo(self, transaction: Transaction, host: str, *extra: str) -> HookAnswer:
        self.calls.append(("ehlo", host, extra))
        if self.capability:
            transaction.notes.setdefault("capabilities", []).append(self.capability)
        return DECLINED

    def hook_helo(self, transaction: Transaction, host: str, *extra: str) -> HookAnswer:
        self.calls.append(("helo", host, extra))
        return DECLINED

    def hook_mail(self, transaction: Transaction, sender: Address, **params: Any) -> HookAnswer:
        self.calls.append(("mail", str(sender), params))
        return DECLINED

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        self.calls.append(("rcpt", str(rcpt), params))
        return OK

    def hook_data(self, transaction: Transaction) -> HookAnswer:
        self.calls.append(("data",))
        return DECLINED

    def hook_reset_transaction(self, transaction: Transaction) -> None:
        self.calls.append(("reset_transaction", str(transaction.sender)))

    def hook_queue_post(self, transaction: Transaction) -> None:
        self.calls.append(("queue_post",))
        if self.on_queue_post is not None:
            self.on_queue_post()


class PreParser(Plugin):
    """mail_pre / rcpt_pre: add the angle brackets a sloppy client forgot."""

    name = "test_pre_parser"

    def hook_mail_pre(self, transaction: Transaction, path: str, params: dict[str, Any]) -> HookAnswer:
        return (OK, f"<{path}>") if not path.startswith("<") else DECLINED

    def hook_rcpt_pre(self, transaction: Transaction, path: str, params: dict[str, Any]) -> HookAnswer:
        return (OK, f"<{path}>") if not path.startswith("<") else DECLINED


class CustomReceived(Plugin):
    name = "test_custom_received"

    def hook_received_line(self, transaction: Transaction, protocol: str, auth: str, ssl: str) -> HookAnswer:
        return OK, f"from custom by mx.test with {protocol}; today"


class ReceivedArgs(Plugin):
    name = "test_received_args"
    seen: list[tuple[str, str, str]] = []

    def hook_received_line(self, transaction: Transaction, smtp: str, auth: str, ssl: str) -> HookAnswer:
        type(self).seen.append((smtp, auth, ssl))
        return DECLINED

    def hook_auth(self, transaction: Transaction, mechanism: str, user: str, password: str | None,
                  digest: str | None, ticket: str | None) -> HookAnswer:
        return OK if password == "pw" else DECLINED


class Base(unittest.SynchronousTestCase):
    def dialogue(self, *plugins: Any, config: dict[str, Any] | None = None) -> Dialogue:
        self.engine = make_engine([Recorder, *plugins, CaptureQueue], config=config)
        recorder, queue = self.engine.plugins[0], self.engine.plugins[-1]
        assert isinstance(recorder, Recorder) and isinstance(queue, CaptureQueue)
        self.recorder, self.queue = recorder, queue
        d = Dialogue(self.engine, remote_ip=IP)
        self.addCleanup(d.close)
        return d

    def calls(self, kind: str) -> list[tuple[Any, ...]]:
        return [call for call in self.recorder.calls if call[0] == kind]


class GreetingTests(Base):
    def test_default_greeting(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.greeting, [(220, None, f"mx.test ESMTP qptwisted {__version__} ready; "
                                                  "send us your mail, but not your spam.")])

    def test_smtpgreeting_gets_esmtp_appended(self) -> None:
        d = self.dialogue(config={"smtpgreeting": "mx.example.test Welcome"})
        self.assertEqual(d.greeting, [(220, None, "mx.example.test Welcome ESMTP")])

    def test_smtpgreeting_with_esmtp_kept(self) -> None:
        d = self.dialogue(config={"smtpgreeting": "mx.example.test ESMTP here"})
        self.assertEqual(d.greeting, [(220, None, "mx.example.test ESMTP here")])

    def test_smtpgreeting_hides_version_in_help(self) -> None:
        d = self.dialogue(config={"smtpgreeting": "mx.example.test Welcome"})
        [(code, _, text)] = d.send("HELP")
        self.assertEqual(code, 214)
        self.assertNotIn(__version__, text)


class HelloTests(Base):
    def test_ehlo_capabilities_in_order(self) -> None:
        d = self.dialogue(config={"databytes": "10485760"})
        self.recorder.capability = "X-PROBE"
        [(code, enhanced, text)] = d.send("EHLO client.test")
        self.assertEqual((code, enhanced), (250, None))
        self.assertEqual(text.split("\n"), [HI, "PIPELINING", "8BITMIME", "SIZE 10485760",
                                            "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME",
                                            "DSN", "LIMITS RCPTMAX=1000", "X-PROBE"])

    def test_ehlo_without_databytes_has_no_size(self) -> None:
        d = self.dialogue()
        [(_, _, text)] = d.send("EHLO client.test")
        self.assertEqual(text.split("\n"), [HI, "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                                            "CHUNKING", "BINARYMIME", "DSN", "LIMITS RCPTMAX=1000"])

    def test_helo_single_line(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("HELO client.test"), [(250, None, f"{HI}; I am so happy to meet you.")])
        self.assertEqual(self.calls("helo"), [("helo", "client.test", ())])

    def test_extra_words_after_the_domain_are_not_passed_on(self) -> None:
        # RFC 5321 4.1.1.1 defines one argument; a hook written as hook_ehlo(transaction, host) must work
        d = self.dialogue()
        self.assertEqual(d.send("EHLO client.test extra words")[-1][0], 250)
        self.assertEqual(self.calls("ehlo"), [("ehlo", "client.test", ())])

    def test_rfc5321_4_1_1_1_helo_ehlo_without_argument_501(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("HELO"),
                         [(501, "5.5.4", "helo requires domain/address - see RFC-5321 4.1.1.1")])
        self.assertEqual(d.send("EHLO "),
                         [(501, "5.5.4", "ehlo requires domain/address - see RFC-5321 4.1.1.1")])
        self.assertEqual(self.calls("helo") + self.calls("ehlo"), [])
        self.assertEqual(d.send("EHLO client.test")[0][0], 250)

    def test_repeated_hello_503(self) -> None:
        for first, second in (("HELO", "EHLO"), ("EHLO", "HELO"), ("EHLO", "EHLO"), ("HELO", "HELO")):
            d = self.dialogue()
            d.send(f"{first} client.test")
            self.assertEqual(d.send(f"{second} other.test"),
                             [(503, "5.5.1", f"but you already said {first} ...")], f"{first} then {second}")

    def test_verbs_are_case_insensitive(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("eHlO client.test")[0][0], 250)
        self.assertEqual(d.send("mail from:<a@sender.test>")[0][0], 250)
        self.assertEqual(d.send("Rcpt To:<b@example.com>")[0][0], 250)


class SequenceTests(Base):
    def test_rfc5321_4_1_4_mail_before_hello_503(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("MAIL FROM:<a@sender.test>"), [(503, "5.5.1", "please say hello first ...")])
        self.assertEqual(self.calls("mail"), [])

    def test_rfc5321_4_1_4_rcpt_before_mail_503(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        self.assertEqual(d.send("RCPT TO:<b@example.com>"), [(503, "5.5.1", "Use MAIL before RCPT")])
        self.assertEqual(self.calls("rcpt"), [])

    def test_data_without_mail_503_after_the_data_hook(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        self.assertEqual(d.send("DATA"), [(503, "5.5.1", "MAIL first")])
        self.assertEqual(self.calls("data"), [("data",)])

    def test_data_without_rcpt_503(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test", "MAIL FROM:<a@sender.test>")
        self.assertEqual(d.send("DATA"), [(503, "5.5.1", "RCPT first")])
        self.assertEqual(d.send("NOOP")[0][0], 250, "a refused DATA must not start reading a message")

    def test_second_mail_resets_the_transaction(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>")
        self.assertEqual(d.send("MAIL FROM:<c@sender.test>")[0][0], 250)
        transaction = d.session.transaction
        self.assertEqual(str(transaction.sender), "<c@sender.test>")
        self.assertEqual(transaction.recipients, [])
        self.assertIn(("reset_transaction", "<a@sender.test>"), self.recorder.calls)

    def test_rset_clears_the_envelope(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>")
        self.assertEqual(d.send("RSET"), [(250, "2.0.0", "OK")])
        self.assertIsNone(d.session.transaction.sender)
        self.assertIn(("reset_transaction", "<a@sender.test>"), self.recorder.calls)
        self.assertEqual(d.send("RCPT TO:<b@example.com>")[0][0], 503)
        self.assertEqual(d.send("MAIL FROM:<a@sender.test>")[0][0], 250, "RSET keeps the HELO")

    def test_mail_syntax_errors(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        self.assertEqual(d.send("MAIL FROM <a@sender.test>"), [(501, "5.5.4", "Syntax error in command")])
        self.assertEqual(d.send("MAIL FROM:a@sender.test")[0][:2], (501, "5.1.7"))
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> =bad")[0][:2], (501, "5.5.4"))
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> SIZE=lots")[0][:2], (501, "5.5.4"))

    def test_mail_from_empty_is_null_sender(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        self.assertEqual(d.send("MAIL FROM:<>")[0][0], 250)
        self.assertTrue(d.session.transaction.sender.is_null)

    def test_rcpt_syntax_errors(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test", "MAIL FROM:<a@sender.test>")
        for bad in ("<>", "<abuse>", "<bob@example.com.>", "bob@example.com"):
            self.assertEqual(d.send(f"RCPT TO:{bad}"), [(501, "5.1.3", "could not parse recipient")], bad)
        self.assertEqual(d.send("RCPT <b@example.com>"), [(501, "5.5.4", "Syntax error in command")])
        self.assertEqual(self.calls("rcpt"), [])

    def test_esmtp_params_reach_hooks_lower_cased(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        d.send("MAIL FROM:<a@sender.test> SIZE=10 BODY=8BITMIME RET=HDRS")
        d.send("RCPT TO:<b@example.com> NOTIFY=NEVER ORCPT=rfc822;b@example.com")
        self.assertEqual(self.calls("mail"), [("mail", "<a@sender.test>",
                                               {"size": "10", "body": "8BITMIME", "ret": "HDRS"})])
        self.assertEqual(self.calls("rcpt"), [("rcpt", "<b@example.com>",
                                               {"notify": "NEVER", "orcpt": "rfc822;b@example.com"})])

    def test_mail_pre_and_rcpt_pre_replace_the_address(self) -> None:
        d = self.dialogue(PreParser)
        d.send("EHLO client.test")
        self.assertEqual(d.send("MAIL FROM:a@sender.test")[0][:2], (250, "2.1.0"))
        self.assertEqual(d.send("RCPT TO:b@example.com")[0][:2], (250, "2.1.5"))
        self.assertEqual(self.calls("mail")[0][1], "<a@sender.test>")
        self.assertEqual([str(r) for r in d.session.transaction.recipients], ["<b@example.com>"])

    def test_rfc6531_utf8_address_needs_smtputf8(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        self.assertEqual(d.send("MAIL FROM:<jörg@bücher.test>")[0][:2], (553, "5.6.7"))
        self.assertIsNone(d.session.transaction.sender)
        self.assertEqual(d.send("MAIL FROM:<a@sender.test>")[0][0], 250)
        self.assertEqual(d.send("RCPT TO:<jörg@bücher.test>")[0][:2], (553, "5.6.7"))
        self.assertEqual(d.send("MAIL FROM:<jörg@bücher.test> SMTPUTF8")[0][:2], (250, "2.1.0"))
        self.assertEqual(d.send("RCPT TO:<ünïcode@example.com>")[0][:2], (250, "2.1.5"))
        self.assertEqual(self.calls("rcpt")[-1][1], "<ünïcode@example.com>")

    def test_rcpt_ok_relay_rules(self) -> None:
        self.engine = make_engine(["rcpt_ok"], config={"rcpthosts": ["example.com"]})
        d = Dialogue(self.engine)
        self.addCleanup(d.close)
        d.send("EHLO client.test", "MAIL FROM:<a@sender.test>")
        self.assertEqual(d.send("RCPT TO:<Bob@EXAMPLE.COM>"),
                         [(250, "2.1.5", "<Bob@EXAMPLE.COM>, recipient ok")])
        self.assertEqual(d.send("RCPT TO:<postmaster>"), [(250, "2.1.5", "<postmaster>, recipient ok")])
        self.assertEqual(d.send("RCPT TO:<x@elsewhere.test>"), [(550, "5.7.1", "Relaying denied (#5.7.1)")])
        d.session.connection.relay_client = True
        self.assertEqual(d.send("RCPT TO:<x@elsewhere.test>")[0][0], 250)

    def test_no_rcpt_plugin_450_then_rcpt_first(self) -> None:
        d = Dialogue(make_engine([]))
        self.addCleanup(d.close)
        d.send("EHLO client.test", "MAIL FROM:<a@sender.test>")
        self.assertEqual(d.send("RCPT TO:<b@example.com>"),
                         [(450, "4.7.1", "No plugin decided if relaying is allowed")])
        self.assertEqual(d.send("DATA"), [(503, "5.5.1", "RCPT first")])


class MiscVerbTests(Base):
    def test_unrecognized_commands_count_to_521(self) -> None:
        d = self.dialogue("count_unrecognized_commands 4")
        replies = d.send("AUTH PLAIN AGJvYgBwdw==", "STARTTLS", "foo", "bar baz", "NOOP")
        self.assertEqual([(r[0], r[1]) for r in replies[:3]], [(500, "5.5.1")] * 3)
        self.assertEqual([r[2] for r in replies[:3]], ["Unrecognized command"] * 3)
        self.assertEqual(replies[3][:2], (521, "5.5.1"))
        self.assertIn("4 unrecognized commands", replies[3][2])
        self.assertEqual(len(replies), 4, "nothing may be answered after the 521")
        self.assertTrue(d.closed)

    def test_empty_lines_count_as_unrecognized(self) -> None:
        d = self.dialogue("count_unrecognized_commands 4")
        replies = d.send_raw(b"\r\n\r\n\r\n\r\n")
        self.assertEqual([r[0] for r in replies], [500, 500, 500, 521])
        self.assertTrue(d.closed)

    def test_vrfy_252(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("VRFY bob"),
                         [(252, "2.1.5", "Just try sending a mail and we'll see how it turns out ...")])

    def test_help_214(self) -> None:
        d = self.dialogue()
        [(code, enhanced, text)] = d.send("HELP")
        self.assertEqual((code, enhanced), (214, "2.0.0"))
        self.assertEqual(len(text.split("\n")), 3)
        self.assertTrue(text.startswith(f"This is qptwisted {__version__}"))

    def test_noop_250(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("NOOP"), [(250, "2.0.0", "OK")])

    def test_quit_221_and_close(self) -> None:
        d = self.dialogue()
        self.assertEqual(d.send("QUIT"),
                         [(221, "2.0.0", "mx.test closing connection. Have a wonderful day.")])
        self.assertTrue(d.closed)
        self.assertEqual(d.send("NOOP"), [], "input after QUIT is ignored")


class StoredMessageTests(Base):
    BODY = ("From: Alice <alice@sender.test>\nSubject: hi\nMessage-Id: <t1@sender.test>\n\n"
            "Hello\n.leading dot\n")

    def deliver(self, d: Dialogue, verb: str = "EHLO", body: str | None = None) -> bytes:
        d.send(f"{verb} client.test", "MAIL FROM:<alice@sender.test>", "RCPT TO:<bob@example.com>", "DATA")
        self.assertEqual([r[0] for r in d.message(body or self.BODY)], [250])
        self.assertEqual(len(self.queue.messages), 1)
        return self.queue.messages[0]

    def test_received_and_authentication_results_above_original_headers(self) -> None:
        d = self.dialogue()
        stored = self.deliver(d).decode()
        lines = stored.split("\n")
        self.assertEqual(lines[0], f"Received: from [{IP}] (HELO client.test) ({IP})")
        self.assertRegex(lines[1], rf"^\tby mx\.test \(qptwisted/{re.escape(__version__)}\) with ESMTP; "
                                   r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$")
        self.assertEqual(lines[2], "Authentication-Results: mx.test; none")
        self.assertEqual(lines[3], "From: Alice <alice@sender.test>")
        self.assertTrue(stored.endswith("\n\nHello\n.leading dot\n"))
        self.assertNotIn("\r", stored)

    def test_received_with_smtp_after_helo(self) -> None:
        d = self.dialogue()
        stored = self.deliver(d, "HELO").decode()
        self.assertIn(") with SMTP; ", stored.split("\n")[1])

    def test_auth_results_id_configurable(self) -> None:
        d = self.dialogue(config={"me-auth-results": "auth.mx.test"})
        stored = self.deliver(d).decode()
        self.assertIn("\nAuthentication-Results: auth.mx.test; none\n", stored)

    def test_rfc8601_5_forged_authentication_results_renamed(self) -> None:
        d = self.dialogue()
        body = ("Authentication-Results: mx.test; spf=pass smtp.mailfrom=forged.test\n"
                "Authentication-Results: other.test; dkim=pass\nSubject: forged\n\nbody\n")
        stored = self.deliver(d, body=body).decode()
        headers = stored.split("\n\n")[0].split("\n")
        ours = [h for h in headers if h.startswith("Authentication-Results: mx.test")]
        self.assertEqual(ours, ["Authentication-Results: mx.test; none"])
        self.assertIn("X-Original-Authentication-Results: mx.test; spf=pass smtp.mailfrom=forged.test",
                      headers)
        self.assertIn("Authentication-Results: other.test; dkim=pass", headers)

    def test_received_line_hook_ok_replaces_the_line(self) -> None:
        d = self.dialogue(CustomReceived)
        stored = self.deliver(d).decode()
        received = [line for line in stored.split("\n") if line.startswith("Received:")]
        self.assertEqual(received, ["Received: from custom by mx.test with ESMTP; today"])

    def test_received_line_hook_gets_the_auth_and_tls_arguments(self) -> None:
        ReceivedArgs.seen = []
        d = self.dialogue(ReceivedArgs, config={"tls_before_auth": "0"})
        d.send("EHLO client.test")
        self.assertEqual(d.send("AUTH PLAIN AHVzZXIAcHc=")[0][0], 235)  # user / pw
        self.deliver(d)
        self.assertEqual(ReceivedArgs.seen, [("ESMTP", "(smtp-auth username user, mechanism PLAIN)\n", "")])

    def test_queue_post_fires_after_the_reply(self) -> None:
        d = self.dialogue()
        seen: list[bytes] = []
        self.recorder.on_queue_post = lambda: seen.append(d.transport.value())
        self.deliver(d)
        self.assertEqual(len(seen), 1)
        self.assertTrue(seen[0].startswith(b"250 2.6.0 Queued"), seen)

    def test_transaction_reset_after_queueing(self) -> None:
        d = self.dialogue()
        self.deliver(d)
        self.assertIsNone(d.session.transaction.sender)
        self.assertEqual(d.send("RCPT TO:<bob@example.com>")[0][0], 503)
        self.assertEqual(self.queue.envelopes, [("<alice@sender.test>", ["<bob@example.com>"])])

    def test_two_messages_on_one_connection(self) -> None:
        d = self.dialogue()
        self.deliver(d)
        d.send("MAIL FROM:<alice@sender.test>", "RCPT TO:<bob@example.com>", "DATA")
        self.assertEqual([r[0] for r in d.message("Subject: two\n\nsecond\n")], [250])
        self.assertEqual(len(self.queue.messages), 2)
        self.assertTrue(self.queue.messages[1].endswith(b"\n\nsecond\n"))


class EnvelopeLimitTests(Base):
    def test_rfc5321_4_5_3_1_8_too_many_recipients_452(self) -> None:
        d = self.dialogue(config={"max_recipients": "2"})
        d.send("EHLO client.test", "MAIL FROM:<a@sender.test>")
        replies = d.send("RCPT TO:<b1@example.com>", "RCPT TO:<b2@example.com>", "RCPT TO:<b3@example.com>")
        self.assertEqual([(r[0], r[1]) for r in replies], [(250, "2.1.5"), (250, "2.1.5"), (452, "4.5.3")])
        self.assertEqual(len(d.session.transaction.recipients), 2)

    def test_rfc6152_unknown_body_type_501(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test")
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> BODY=BINARY")[0][:2], (501, "5.5.4"))
        self.assertEqual(d.send("MAIL FROM:<a@sender.test> BODY=8bitmime")[0][0], 250)

    def test_eight_bit_headers_survive_header_rewriting(self) -> None:
        d = self.dialogue()
        d.send("EHLO client.test", "MAIL FROM:<a@sender.test> SMTPUTF8", "RCPT TO:<b@example.com>", "DATA")
        raw = ("Authentication-Results: mx.test; spf=pass\r\nSubject: Grüße aus Köln\r\n"
               "From: Jörg <j@x.test>\r\n\r\nbody ü\r\n.\r\n").encode()
        self.assertEqual([r[0] for r in d.send_raw(raw)], [250])
        stored = self.queue.messages[0]
        self.assertIn("\nSubject: Grüße aus Köln\nFrom: Jörg <j@x.test>\n\nbody ü\n".encode(), stored)
        self.assertIn(b"\nX-Original-Authentication-Results: mx.test; spf=pass\n", stored)


class BrokenParser(Plugin):
    name = "test_broken_parser"

    def hook_mail_parse(self, transaction: Transaction) -> HookAnswer:
        def parse(line: str) -> Any:
            raise KeyError("parser bug")

        return OK, parse


class FaultTests(Base):
    def test_command_that_fails_inside_the_engine_451(self) -> None:
        d = self.dialogue(BrokenParser)
        d.send("EHLO client.test")
        self.assertEqual(d.send("MAIL FROM:<a@sender.test>"),
                         [(451, "4.3.0",
                           "Internal error - try again later - command 'MAIL' failed unexpectedly")])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertFalse(d.closed)
        self.assertEqual(d.send("NOOP")[0][0], 250)


class ResultsPlugin(Plugin):
    name = "test_results"

    def register(self, *args: str) -> None:
        self.seen_received: list[str | None] = []

    def hook_mail(self, transaction: Transaction, sender: Address, **params: Any) -> HookAnswer:
        transaction.connection.auth_results.append("iprev=pass policy.iprev=192.0.2.1")
        transaction.auth_results.append("spf=pass smtp.mailfrom=sender.test")
        return DECLINED

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        self.seen_received.append(transaction.header["Received"])
        return DECLINED


class ResultsTests(Base):
    def test_rfc8601_results_from_plugins_and_headers_before_data_post(self) -> None:
        d = self.dialogue(ResultsPlugin)
        plugin = self.engine.plugins[1]
        assert isinstance(plugin, ResultsPlugin)
        d.send("EHLO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>", "DATA")
        self.assertEqual([r[0] for r in d.message("Subject: r\n\nbody\n")], [250])
        stored = self.queue.messages[0].decode()
        self.assertIn("\nAuthentication-Results: mx.test; iprev=pass policy.iprev=192.0.2.1;\n"
                      "\tspf=pass smtp.mailfrom=sender.test\nSubject: r\n", stored)
        self.assertEqual(len(plugin.seen_received), 1)
        self.assertTrue(str(plugin.seen_received[0]).startswith(f"from [{IP}] (HELO client.test)"))


class ExactReply(Plugin):
    """Refuses with the exact reply it chooses (a scanner's outage, a milter's SMFIR_REPLYCODE)."""

    name = "test_exact_reply"

    def hook_mail(self, transaction: Transaction, sender: Address, **params: Any) -> HookAnswer:
        if sender.user == "gone":
            return DENY, Reply(554, "5.7.1", "Sender refused by filter\nSee the postmaster")
        return DECLINED

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        return DENYSOFT, Reply(451, "4.7.1", "Scanner unavailable, try again later")


class ExactReplyTests(Base):
    def test_a_refusal_may_carry_its_exact_reply(self) -> None:
        d = self.dialogue(ExactReply)
        d.send("EHLO client.test")
        self.assertEqual(d.send("MAIL FROM:<gone@sender.test>"),
                         [(554, "5.7.1", "Sender refused by filter\nSee the postmaster")])
        d.send("MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.com>", "DATA")
        self.assertEqual(d.message("Subject: x\n\nbody\n"),
                         [(451, "4.7.1", "Scanner unavailable, try again later")])
        self.assertEqual(self.queue.messages, [])
