"""rcpt_map: per-domain address map with return codes, reloaded when it changes."""

from __future__ import annotations

import os

from twisted.trial import unittest

from qptwisted import ConfigError
from qptwisted.testing import make_engine
from tests.plugins.policy_support import codes, dialogue, engine, plugin

MAP = [
    "# the example.com map",
    "bob@example.com OK",
    "info DENYSOFT Mailbox full, try later",
    "carol@example.com DENY Carol left",
]


class RcptMapTests(unittest.TestCase):
    def test_table(self) -> None:
        smtp = dialogue(
            ["rcpt_map domain example.com file rcpt_map.example.com"], {"rcpt_map.example.com": MAP}
        )
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(codes(smtp.send("RCPT TO:<Bob@Example.com>")), [250])
        self.assertEqual(smtp.send("RCPT TO:<info@example.com>"), [(450, "4.7.1", "Mailbox full, try later")])
        self.assertEqual(smtp.send("RCPT TO:<carol@example.com>"), [(550, "5.7.1", "Carol left")])
        self.assertEqual(smtp.send("RCPT TO:<nobody@example.com>"), [(550, "5.7.1", "No such user.")])
        self.assertEqual(codes(smtp.send("RCPT TO:<anyone@example.net>")), [250])

    def test_default(self) -> None:
        smtp = dialogue(["rcpt_map domain example.com file m default DENYSOFT=Try_again_later"], {"m": MAP})
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(smtp.send("RCPT TO:<nobody@example.com>"), [(450, "4.7.1", "Try again later")])

    def test_reload_at_pre_connection(self) -> None:
        eng = engine(["rcpt_map domain example.com file m"], {"m": MAP})
        rcpt_map = plugin(eng, "rcpt_map")
        with open(rcpt_map.path, "a", encoding="utf-8") as handle:
            handle.write("dave OK\n")
        os.utime(rcpt_map.path, (1, 1))
        from tests.core_support import Dialogue

        smtp = Dialogue(eng)
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(codes(smtp.send("RCPT TO:<dave@example.com>")), [250])

    def test_bad_configuration_fails_at_start(self) -> None:
        self.assertRaises((ConfigError, ValueError), make_engine, ["rcpt_map domain example.com"])
        self.assertRaises(
            (ConfigError, ValueError), make_engine, ["rcpt_map domain example.com file missing"]
        )
        self.assertRaises(
            (ConfigError, ValueError),
            make_engine,
            ["rcpt_map domain example.com file m default NOPE=x"],
            {"m": MAP},
        )
