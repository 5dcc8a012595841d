"""The stock plugins' declared arguments: qpsmtpd's lines still parse, mistakes stop the start.

Every message names the plugin, the argument and the config line, so a
postmaster finds the typo without reading a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from qpplugins.dnsbl import DNSBL
from qpplugins.queue.maildir import Maildir
from qpplugins.queue.smtp_forward import SMTPForward
from qptwisted import ArgumentError, ConfigError
from qptwisted.core.arguments import help_text
from qptwisted.testing import make_engine
from tests.plugins.policy_support import plugin


def loaded(line: str, config: dict[str, Any] | None = None) -> Any:
    """The plugin a single ``config/plugins`` line loads."""
    engine = make_engine([line], config)
    return plugin(engine, line.split()[0])


class ErrorMessageTests(unittest.TestCase):
    def refused(self, line: str) -> str:
        with self.assertRaises(ConfigError) as raised:
            make_engine([line])
        return str(raised.exception)

    def test_a_wrong_value_names_plugin_argument_and_line(self) -> None:
        message = self.refused("noop_counter max many")
        self.assertIn("plugin noop_counter: argument max: 'many' is not a whole number", message)
        self.assertIn("('noop_counter max many')", message)
        self.assertIn("plugin greylisting: argument sender: 'maybe' is not a yes/no value",
                      self.refused("greylisting sender maybe"))
        self.assertIn("plugin helo: argument policy: 'lax' is not one of lenient, rfc, strict",
                      self.refused("helo policy lax"))
        self.assertIn("plugin dnsbl: argument reject_type: 'later' is not one of",
                      self.refused("dnsbl later"))
        self.assertIn("plugin badmailfrom: argument reject: 'sometimes' is not one of 0, 1, naughty",
                      self.refused("badmailfrom reject sometimes"))

    def test_an_unknown_word_is_refused(self) -> None:
        message = self.refused("relay sometimes")
        self.assertIn("plugin relay: arguments: unknown argument 'sometimes'", message)
        self.assertIn("known: fail_open, only", message)
        self.assertIn("unknown argument 'bogus'", self.refused("queue/smtp-forward 127.0.0.1 bogus=1"))
        self.assertIn("unknown argument 'extra'", self.refused("rcpt_ok extra"))
        self.assertIn("unknown argument 'colour'", self.refused("karma colour blue"))
        self.assertIn("unknown argument '60'", self.refused("loop 50 60"))

    def test_a_missing_required_positional(self) -> None:
        self.assertIn("plugin queue/maildir: argument directory: is required", self.refused("queue/maildir"))
        self.assertIn("plugin auth/imap: argument host: is required", self.refused("auth/imap"))
        self.assertIn("plugin queue/webhook: argument url: is required", self.refused("queue/webhook"))
        self.assertIn("plugin block_subject: argument domains: is required", self.refused("block_subject"))
        self.assertIn("plugin loadcheck: argument max_load: needs a value",
                      self.refused("loadcheck max_load"))

    def test_argument_error_is_a_config_error(self) -> None:
        self.assertTrue(issubclass(ArgumentError, ConfigError))


class QpsmtpdSyntaxTests(unittest.TestCase):
    """Lines written for qpsmtpd (or for an earlier qptwisted) keep their meaning."""

    def test_bare_numbers(self) -> None:
        self.assertEqual(loaded("noop_counter 5").max, 5)
        self.assertEqual(loaded("noop_counter max 5").max, 5)
        self.assertEqual(loaded("count_unrecognized_commands 2").max, 2)
        self.assertEqual(loaded("loop 50").max_hops, 50)
        self.assertEqual(loaded("random_error 5").percent, 5.0)

    def test_dnsbl_single_word_is_reject_type(self) -> None:
        dnsbl = loaded("dnsbl temp")
        self.assertEqual((dnsbl.reject_type, dnsbl.reject), ("temp", "1"))
        dnsbl = loaded("dnsbl disconnect reject naughty timeout 5")
        self.assertEqual((dnsbl.reject_type, dnsbl.reject, dnsbl.lookup_timeout),
                         ("disconnect", "naughty", 5))

    def test_maildir_positionals(self) -> None:
        base = os.path.abspath(self.mktemp())
        maildir = loaded(f"queue/maildir {base} %d/%l 0640")
        self.assertEqual((maildir.directory, maildir.pattern, maildir.mode), (Path(base), "%d/%l", 0o640))
        maildir = loaded(f"queue/maildir {base} 0640")
        self.assertEqual((maildir.pattern, maildir.mode), ("", 0o640))
        relative = loaded("queue/maildir spool/maildir")
        self.assertEqual(relative.directory, Path.cwd() / "spool" / "maildir")

    def test_smtp_forward_host_port_and_options(self) -> None:
        forward = loaded("queue/smtp-forward 127.0.0.1 2525 starttls=require xforward timeout=5")
        self.assertEqual((forward.host, forward.port, forward.starttls), ("127.0.0.1", 2525, "require"))
        self.assertEqual((forward.use_xforward, forward.use_xclient, forward.timeouts.command),
                         (True, False, 5))
        self.addCleanup(forward.close)
        lmtp = loaded("queue/lmtp [::1]:2424 xclient=yes")
        self.assertEqual((lmtp.host, lmtp.port, lmtp.starttls, lmtp.use_xclient), ("::1", 2424, "no", True))
        self.addCleanup(lmtp.close)

    def test_logging_levels(self) -> None:
        for line in ("logging/warn 6", "logging/warn loglevel 6", "logging/connection_id 6",
                     "logging/transaction_id loglevel LOGINFO", "logging/adaptive loglevel 6 reject 7"):
            engine = make_engine(config={"logging": line, "loglevel": "2"})
            self.assertEqual(engine.plugins[0].level, 6, line)  # type: ignore[attr-defined]
        engine = make_engine(config={"logging": "logging/warn +2", "loglevel": "3"})
        self.assertEqual(engine.plugins[0].level, 5)  # type: ignore[attr-defined]

    def test_flags_and_repeats(self) -> None:
        self.assertTrue(loaded("relay only").only)
        self.assertFalse(loaded("relay").only)
        imap = loaded("auth/imap imap.example.test imaps")
        self.assertEqual((imap.host, imap.port, imap.imaps), ("imap.example.test", 993, True))
        early = loaded("earlytalker wait 2 check-at CONNECT check-at DATA defer-reject 1")
        self.assertEqual((early.wait, early.phases, early.defer_reject), (2.0, {"CONNECT", "DATA"}, True))

    def test_yes_no_words(self) -> None:
        self.assertTrue(loaded("uribl scan-headers yes checkip on").scan_headers)
        self.assertFalse(loaded("dkim sign no").sign)
        self.assertEqual(loaded("badmailfrom reject off").reject, "0")


class HelpTextTests(unittest.TestCase):
    def test_lists_the_arguments(self) -> None:
        text = help_text(Maildir)
        self.assertTrue(text.startswith("queue/maildir: deliver accepted mail into Maildirs"))
        for expected in ("[directory]", "required", "[pattern]", "[mode]", "octal mode, default 0600"):
            self.assertIn(expected, text)
        text = help_text(DNSBL)
        for expected in ("reject ", "0|1|naughty|connect", "[reject_type]", "default 'perm'", "also timeout"):
            self.assertIn(expected, text)
        self.assertIn("starttls", help_text(SMTPForward))
