"""help: help files and not_implemented."""

from __future__ import annotations

from twisted.trial import unittest

from tests.plugins.policy_support import codes, dialogue

FILES = {"help/default": ["Commands: HELO EHLO MAIL RCPT DATA QUIT"], "help/mail": ["MAIL FROM:<address>"],
         "rcpt.txt": ["RCPT TO:<address>", "one per recipient"]}


class HelpTests(unittest.TestCase):
    def test_help_dir_and_files(self) -> None:
        smtp = dialogue(["help rcpt rcpt.txt"], FILES)
        self.assertEqual(smtp.send("HELP"), [(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA QUIT")])
        self.assertEqual(smtp.send("HELP Mail"), [(214, "2.0.0", "MAIL FROM:<address>")])
        self.assertEqual(smtp.send("HELP rcpt"), [(214, "2.0.0", "RCPT TO:<address>\none per recipient")])
        self.assertEqual(smtp.send("HELP vrfy"), [(504, "5.0.0", "Command parameter not implemented.")])

    def test_engine_default_without_files(self) -> None:
        smtp = dialogue(["help"])
        self.assertEqual(codes(smtp.send("HELP")), [214])

    def test_not_implemented(self) -> None:
        smtp = dialogue(["help not_implemented 1"])
        self.assertEqual(smtp.send("HELP mail"), [(502, "5.0.0", "Not implemented.")])
