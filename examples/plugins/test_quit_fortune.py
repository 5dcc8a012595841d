"""quit_fortune: HELO clients get a fortune with their goodbye, EHLO clients the plain one."""

from pathlib import Path

from twisted.trial import unittest

from qptwisted.testing import SMTPDialogue, make_engine

HERE = Path(__file__).resolve().parent


class QuitFortuneTests(unittest.TestCase):
    def dialogue(self, hello: str) -> SMTPDialogue:
        fortune = Path(self.mktemp()).absolute()
        fortune.write_text("#!/bin/sh\necho 'You will receive mail today.'\n")
        fortune.chmod(0o755)
        smtp = SMTPDialogue(make_engine([f"quit_fortune fortune {fortune}"], plugin_dirs=[HERE]))
        smtp.send(f"{hello} client.test")
        return smtp

    def test_helo_client_gets_a_fortune(self) -> None:
        self.assertEqual(self.dialogue("HELO").send("QUIT"),
                         [(221, "2.0.0", "mx.test closing connection.\n / You will receive mail today.")])

    def test_ehlo_client_gets_the_usual_goodbye(self) -> None:
        self.assertEqual(self.dialogue("EHLO").send("QUIT"),
                         [(221, "2.0.0", "mx.test closing connection. Have a wonderful day.")])
