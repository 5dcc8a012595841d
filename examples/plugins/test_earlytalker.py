"""earlytalker: the greeting waits; a client that talks meanwhile is refused and disconnected."""

from pathlib import Path

from twisted.trial import unittest

from qptwisted.testing import SMTPDialogue, make_engine

HERE = Path(__file__).resolve().parent


class EarlyTalkerTests(unittest.TestCase):
    def test_patient_client_is_greeted_after_the_wait(self) -> None:
        smtp = SMTPDialogue(make_engine(["earlytalker wait 5"], plugin_dirs=[HERE]), advance=False)
        smtp.engine.clock.advance(4)
        self.assertEqual(smtp.replies(), [])
        smtp.engine.clock.advance(1)
        self.assertEqual(smtp.replies()[0].code, 220)

    def test_early_talker_is_refused(self) -> None:
        smtp = SMTPDialogue(make_engine(["earlytalker wait 5"], plugin_dirs=[HERE]), advance=False)
        self.assertEqual(smtp.send("EHLO spam.test"), [])
        smtp.engine.clock.advance(5)
        self.assertEqual(smtp.replies(), [(450, "4.7.1", "Don't be rude and talk before I say hello!")])
        self.assertTrue(smtp.closed)
