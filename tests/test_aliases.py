"""qpsmtpd's old plugin names, argument spellings and log levels load unchanged (qptwisted.core.aliases)."""

from __future__ import annotations

import contextlib
import io
import syslog
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from qptwisted.core.aliases import ALIASES, Rewrite
from qptwisted.core.codes import LOGWARN
from qptwisted.core.engine import Engine
from qptwisted.core.loader import discover, parse_plugin_line
from qptwisted.service.cli import main as cli_main
from qptwisted.testing import make_engine

#: what the new plugin of an alias needs on its line to load at all
NEEDS = {"auth/imap": "127.0.0.1 143", "auth/checkpassword": "checkpw /bin/false true /bin/true"}


def capture_log(case: unittest.TestCase) -> list[str]:
    """What engines log at LOGWARN or more urgent while the test runs."""
    lines: list[str] = []
    original = Engine.log

    def log(engine: Engine, level: int, message: str, *args: Any, **kwargs: Any) -> None:
        if level <= LOGWARN:
            lines.append(message)
        original(engine, level, message, *args, **kwargs)

    case.patch(Engine, "log", log)
    return lines


def load(case: unittest.TestCase, *lines: str, config: dict[str, Any] | None = None) -> Engine:
    engine = make_engine(list(lines), config=config)
    case.addCleanup(engine.close)
    return engine


class RenamedPluginTests(unittest.TestCase):
    def test_every_old_name_loads_the_new_plugin_and_says_so(self) -> None:
        stock = discover().stock()
        for alias in ALIASES.values():
            if not alias.renamed:
                continue
            with self.subTest(alias.old):
                self.assertIn(alias.new, stock)
                log = capture_log(self)
                engine = load(self, f"{alias.old} {NEEDS.get(alias.new, '')}".strip())
                self.assertEqual(engine.plugins[0].name, alias.new)
                self.assertEqual(engine.plugins[0].plugin_name, alias.new)
                self.assertTrue(any(f"{alias.old} is deprecated" in line and f"loaded as {alias.new}" in line
                                    for line in log), log)

    def test_debian_shims_of_0_94(self) -> None:
        shims = {"check_badmailfrom": "badmailfrom", "check_badrcptto": "badrcptto",
                 "check_earlytalker": "earlytalker", "check_loop": "loop", "check_relay": "relay",
                 "check_spamhelo": "helo", "require_resolvable_fromhost": "resolvable_fromhost",
                 "check_basicheaders": "headers", "denysoft_greylist": "greylisting"}
        self.assertEqual({old: ALIASES[old].new for old in shims}, shims)

    def test_logged_once_per_start_with_the_new_spelling(self) -> None:
        log = capture_log(self)
        engine = load(self, "check_relay", "check_relay:1", "check_loop 30")
        self.assertEqual([p.plugin_name for p in engine.plugins], ["relay", "relay:1", "loop"])
        relay = [line for line in log if "check_relay is deprecated" in line]
        self.assertEqual(len(relay), 1, log)
        self.assertIn("write: relay", relay[0])
        [loop] = [line for line in log if "check_loop is deprecated" in line]
        self.assertIn("write: loop 30", loop)
        self.assertEqual(engine.plugins[2].max_hops, 30)

    def test_a_plugin_of_the_old_name_in_plugin_dirs_wins(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "check_relay.py").write_text(
            "from qptwisted import Plugin\n\n\nclass Mine(Plugin):\n    name = 'check_relay'\n")
        log = capture_log(self)
        engine = load(self, "check_relay", config={"plugin_dirs": str(directory)})
        self.assertEqual(engine.plugins[0].name, "check_relay")
        self.assertFalse([line for line in log if "deprecated" in line])

    def test_help_plugin_knows_old_names(self) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(cli_main(["help-plugin", "check_spamhelo"]), 0)
        self.assertTrue(out.getvalue().startswith("helo:"), out.getvalue())

    def test_dash_and_underscore_are_the_same_in_stock_names(self) -> None:
        engine = load(self, "queue/qmail_queue", "queue/exim_bsmtp")
        self.assertEqual([p.name for p in engine.plugins], ["queue/qmail-queue", "queue/exim-bsmtp"])


class ArgumentTranslationTests(unittest.TestCase):
    def test_denysoft_greylist_drops_what_qpsmtpd_ignored(self) -> None:
        log = capture_log(self)
        engine = load(self, "denysoft_greylist redhotpenguin.com taperfriendlymusic.org")
        plugin = engine.plugins[0]
        self.assertEqual((plugin.name, plugin.black_timeout, plugin.reject), ("greylisting", 3000, "1"))
        [line] = [line for line in log if "denysoft_greylist is deprecated" in line]
        self.assertIn("dropped 'redhotpenguin.com taperfriendlymusic.org': not a greylisting parameter", line)
        self.assertIn("write: greylisting", line)

    def test_greylisting_parameters_of_qpsmtpd(self) -> None:
        engine = load(self, "denysoft_greylist mode testonly black_timeout 60 nfslock 1",
                      "greylisting:2 mode off per_recipient_db 1 upgrade 1 sender 1")
        first, second = engine.plugins
        self.assertEqual((first.reject, first.black_timeout), ("0", 60))
        self.assertEqual((second.plugin_name, second.reject, second.sender), ("greylisting:2", "0", True))

    def test_greylisting_reads_qpsmtpds_parameter_file(self) -> None:
        engine = load(self, "greylisting black_timeout 120",
                      config={"denysoft_greylist": ["black_timeout 600", "white_timeout 86400",
                                                    "mode testonly", "Come back later, please"]})
        plugin = engine.plugins[0]
        self.assertEqual((plugin.black_timeout, plugin.white_timeout, plugin.reject), (120, 86400, "0"))
        self.assertEqual(plugin.message, "Come back later, please")

    def test_check_basicheaders_days(self) -> None:
        engine = load(self, "check_basicheaders 5", "check_basicheaders:1 days 2 past 10")
        first, second = engine.plugins
        self.assertEqual((first.past, first.future), (5, 5))
        self.assertEqual((second.past, second.future), (10, 2))

    def test_relay_only(self) -> None:
        self.assertTrue(load(self, "relay_only").plugins[0].only)

    def test_spf_deny(self) -> None:
        engine = load(self, "sender_permitted_from spf_deny 2", "sender_permitted_from:1 spf_deny 1")
        self.assertEqual([p.reject for p in engine.plugins], ["4", "3"])

    def test_spamassassin_reject_threshold(self) -> None:
        self.assertEqual(ALIASES["spamassassin"].translate(
            ["reject_threshold", "20", "munge_subject_threshold", "5"]),
            Rewrite(("reject", "20", "munge_subject_threshold", "5"),
                    ("'reject_threshold 20' is now 'reject 20'",)))
        if "spamassassin" not in discover().stock():
            raise unittest.SkipTest("no spamassassin plugin yet")
        engine = load(self, "spamassassin reject_threshold 20 munge_subject_threshold 5")
        self.assertEqual(float(engine.plugins[0].reject), 20)

    def test_a_trailing_comment_is_not_arguments(self) -> None:
        self.assertEqual(parse_plugin_line("rcpt_ok # this is the last rcpt plugin").args, ())
        self.assertEqual(parse_plugin_line("loop 30 #30 hops").args, ("30",))
        self.assertEqual(parse_plugin_line("queue/maildir /var/mail#1").args, ("/var/mail#1",))
        engine = load(self, "queue/qmail-queue # leave enabled to forward the email")
        self.assertIsNone(engine.plugins[0].path)


class LevelTests(unittest.TestCase):
    """Symbolic and relative levels wherever a level is accepted; syslog names."""

    def test_the_talks_logging_lines(self) -> None:
        log_file = Path(self.mktemp()).resolve() / "qpsmtpd.log"
        engine = load(self, f"logging/file loglevel LOGINFO {log_file}",
                      "logging/syslog loglevel LOGINFO priority LOG_NOTICE facility LOG_MAIL")
        file_log, system_log = engine.plugins
        self.assertEqual((file_log.level, system_log.level), (6, 6))
        self.assertEqual((system_log.send_priority, system_log.send_facility),
                         (syslog.LOG_NOTICE, syslog.LOG_MAIL))

    def test_relative_levels_count_from_config_loglevel(self) -> None:
        engine = load(self, "logging/warn +2", "logging/warn:1 -1", "badmailfrom loglevel LOGDEBUG",
                      config={"loglevel": "LOGNOTICE"})
        self.assertEqual(engine.loglevel, 5)
        self.assertEqual([engine.plugins[0].level, engine.plugins[1].level], [7, 4])
        self.assertEqual(engine.plugins[2].adjust_log_level(3), 7)

    def test_every_name_qpsmtpd_knows(self) -> None:
        from qptwisted.core.codes import parse_level

        names = ["LOGEMERG", "LOGALERT", "LOGCRIT", "LOGERROR", "LOGWARN", "LOGNOTICE", "LOGINFO", "LOGDEBUG"]
        self.assertEqual([parse_level(name) for name in names], list(range(8)))
        self.assertEqual(parse_level("+9", 4), 7)


class DocumentedTests(unittest.TestCase):
    def test_the_compatibility_page_lists_every_alias(self) -> None:
        import re

        page = (Path(__file__).resolve().parent.parent / "docs" / "compatibility.md").read_text()
        section = page.split("## Moving from qpsmtpd", 1)[1]
        rows = dict(re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", section, re.M))
        self.assertEqual(rows, {alias.old: alias.new for alias in ALIASES.values()})
