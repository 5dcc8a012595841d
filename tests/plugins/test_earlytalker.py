"""earlytalker: early talk before the greeting or the 354, judged on the engine's clock."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted import ConfigError
from qptwisted.testing import make_engine
from tests.core_support import Dialogue
from tests.plugins.policy_support import MESSAGE, advance, codes, dialogue, engine

TALKER = "Connecting host started transmitting before SMTP greeting"


class ConnectCheckTests(unittest.TestCase):
    def test_quiet_client_is_greeted_after_wait(self) -> None:
        smtp = dialogue(["earlytalker wait 2"])
        self.assertEqual(smtp.greeting, [])
        advance(smtp, 1.9)
        self.assertEqual(smtp.replies(), [])
        advance(smtp, 0.1)
        self.assertEqual(codes(smtp.replies()), [220])
        self.assertEqual(codes(smtp.deliver("<a@example.org>", ["<bob@example.com>"], MESSAGE))[-1], 250)

    def test_talker_is_refused_per_reject_type(self) -> None:
        for args, expected, closed in (("", (550, "5.7.1", TALKER), True),
                                       ("reject_type temp", (450, "4.7.1", TALKER), True),
                                       ("reject_type disconnect", (550, "5.7.1", TALKER), True)):
            smtp = dialogue([f"earlytalker wait 1 {args}".strip()])
            self.assertEqual(smtp.send("EHLO spam.test"), [])
            advance(smtp, 1)
            self.assertEqual(smtp.replies(), [expected], args)
            self.assertEqual(smtp.closed, closed)
            self.assertTrue(smtp.session.connection.notes["earlytalker"])
            self.assertEqual(smtp.session.connection.notes["karma"], -1)

    def test_reject_zero_only_logs(self) -> None:
        smtp = dialogue(["earlytalker wait 1 reject 0"])
        smtp.send("EHLO spam.test")
        advance(smtp, 1)
        replies = smtp.replies()
        self.assertEqual(codes(replies), [220, 250])

    def test_relay_client_is_not_delayed(self) -> None:
        smtp = dialogue(["relay", "earlytalker wait 5"], {"relayclients": ["192.0.2.1"]})
        self.assertEqual(codes(smtp.greeting), [220])

    def test_whitelisted_host_is_not_delayed(self) -> None:
        smtp = dialogue(["whitelist", "earlytalker wait 5"], {"whitelisthosts": ["192.0.2.0/24"]})
        self.assertEqual(codes(smtp.greeting), [220])

    def test_defer_reject_refuses_mail(self) -> None:
        smtp = dialogue(["earlytalker wait 1 defer-reject 1"])
        smtp.send("EHLO spam.test")
        advance(smtp, 1)
        self.assertEqual(codes(smtp.replies()), [220, 250])
        self.assertEqual(smtp.send("MAIL FROM:<a@example.org>"), [(550, "5.7.1", TALKER)])

    def test_legacy_action(self) -> None:
        smtp = dialogue(["earlytalker wait 1 action denysoft"])
        smtp.send("EHLO spam.test")
        advance(smtp, 1)
        self.assertEqual(codes(smtp.replies()), [450])

    def test_disconnect_during_wait_cancels_timer(self) -> None:
        smtp = dialogue(["earlytalker wait 3"])
        smtp.close()
        self.assertEqual(smtp.engine.clock.getDelayedCalls()[:0], [])
        self.assertFalse([call for call in smtp.engine.clock.getDelayedCalls() if call.getTime() == 3])


class DataCheckTests(unittest.TestCase):
    def test_check_at_data_only(self) -> None:
        smtp = dialogue(["earlytalker wait 1 check-at DATA"])
        self.assertEqual(codes(smtp.greeting), [220])
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>", "RCPT TO:<bob@example.com>")
        self.assertEqual(smtp.send("DATA"), [])
        advance(smtp, 1)
        self.assertEqual(codes(smtp.replies()), [354])
        self.assertEqual(codes(smtp.message(MESSAGE)), [250])

    def test_message_sent_before_354_is_refused(self) -> None:
        smtp = dialogue(["earlytalker wait 1 check-at DATA check-at CONNECT"])
        advance(smtp, 1)
        smtp.replies()
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>", "RCPT TO:<bob@example.com>")
        self.assertEqual(smtp.send_raw(b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n"), [])
        advance(smtp, 1)
        self.assertEqual(smtp.replies()[0], (554, "5.7.1", TALKER))


class ArgumentTests(unittest.TestCase):
    def test_bad_arguments(self) -> None:
        self.assertRaises((ConfigError, ValueError), make_engine, ["earlytalker wait"])
        self.assertRaises((ConfigError, ValueError), make_engine, ["earlytalker check-at HELO"])
        self.assertRaises((ConfigError, ValueError), make_engine, ["earlytalker reject_type sometimes"])

    def test_engine_keeps_reading_while_waiting(self) -> None:
        eng = engine(["earlytalker wait 1"])
        smtp = Dialogue(eng)
        self.assertEqual(smtp.transport.producerState, "producing")
        advance(eng, 1)
