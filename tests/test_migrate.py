"""``qpsmtpd migrate DIR`` on the seed talks' configurations and on what else a qpsmtpd directory holds."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from twisted.trial import unittest

from qptwisted.core.loader import discover
from qptwisted.service.cli import TOOLS
from qptwisted.service.cli import main as cli_main
from tests.seed_support import FIXTURES, install, set_environment


def migrate(directory: Path) -> tuple[int, list[str]]:
    """Run the tool as the command line does; its exit status and output lines."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli_main(["migrate", str(directory)])
    return status, out.getvalue().splitlines()


def verdicts(lines: list[str]) -> dict[str, str]:
    """``{"plugins 3": "alias", ...}`` from the report."""
    found = {}
    for line in lines:
        match = re.match(r"((?:logging|plugins) \d+)\s+(\w+)\s", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def details(lines: list[str], where: str) -> list[str]:
    """The detail lines under one finding."""
    start = next(index for index, line in enumerate(lines) if line.startswith(f"{where} "))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        out.append(line.strip().removeprefix("- "))
    return out


class WritingApplicationsTests(unittest.TestCase):
    """Fred Moyer's directory as a postmaster copies it over: his own plugins are not there."""

    def setUp(self) -> None:
        self.directory = install(self, "writing-applications")

    def test_line_by_line(self) -> None:
        status, lines = migrate(self.directory)
        self.assertEqual(status, 1)
        self.assertIn("migrate", TOOLS)
        found = verdicts(lines)
        self.assertEqual(found["plugins 1"], "port")  # auth/auth_vpopmail_sql
        self.assertEqual(found["plugins 2"], "changed")  # denysoft_greylist with words qpsmtpd ignored
        self.assertEqual(found["plugins 3"], "ok")  # quit_fortune
        self.assertEqual(found["plugins 4"], "alias")  # check_earlytalker
        self.assertEqual(found["plugins 7"], "port")  # check_delivery
        self.assertEqual(found["plugins 12"], "changed")  # check_spamhelo: helo checks more
        self.assertEqual(found["plugins 15"], "ok")  # rcpt_ok # this is the last rcpt plugin
        self.assertEqual(found["plugins 18"], "port")  # craigslist
        self.assertEqual(found["plugins 19"], "ok")  # queue/qmail-queue
        expected_spam = "changed" if "spamassassin" in discover().stock() else "port"
        self.assertEqual(found["plugins 16"], expected_spam)
        text = "\n".join(lines)
        self.assertIn("plugins 4    alias    check_earlytalker  ->  earlytalker", text)
        self.assertIn("plugins 2    changed  denysoft_greylist redhotpenguin.com taperfriendlymusic.org  ->  "
                      "greylisting", text)
        self.assertIn("dropped 'redhotpenguin.com taperfriendlymusic.org': not a greylisting parameter",
                      "\n".join(details(lines, "plugins 2")))
        self.assertIn("one of qpsmtpd's plugins that qptwisted does not ship",
                      details(lines, "plugins 1")[0])
        self.assertIn("not a qpsmtpd plugin (third-party or the site's own)", details(lines, "plugins 7")[0])
        self.assertIn("docs/writing-plugins.md", details(lines, "plugins 18")[0])
        self.assertRegex(lines[-1], r"^Porting a plugin: docs/writing-plugins\.md")
        self.assertRegex(lines[-2], r"^\d+ load as they are, 4 through an alias, \d+ with changed arguments "
                                    r"or behaviour, 0 refused, [34] to port$")

    def test_a_perl_plugin_in_plugin_dirs_is_named(self) -> None:
        perl = self.directory / "perl-plugins"
        perl.mkdir()
        (perl / "check_delivery").write_text("sub hook_rcpt { return DECLINED }\n")
        (self.directory / "plugin_dirs").write_text("perl-plugins\nno-such-dir\n")
        status, lines = migrate(self.directory)
        self.assertEqual(status, 1)
        self.assertIn(f"a Perl plugin ({perl / 'check_delivery'}): rewrite it in Python as "
                      f"{perl / 'check_delivery'}.py", details(lines, "plugins 7")[0])
        self.assertTrue(any(line.startswith("note: plugin_dirs: 'no-such-dir' does not exist")
                            for line in lines))

    def test_with_the_ported_plugins_everything_loads(self) -> None:
        dirs = [str(FIXTURES / "writing-applications" / "plugin_dirs")]
        if "spamassassin" not in discover().stock():
            dirs.append(str(FIXTURES / "writing-applications" / "until-stock"))
        (self.directory / "plugin_dirs").write_text("".join(f"{d}\n" for d in dirs))
        status, lines = migrate(self.directory)
        self.assertEqual(status, 0, "\n".join(lines))
        self.assertNotIn("port", verdicts(lines).values())


class OtherFindingsTests(unittest.TestCase):
    def test_holzts_example_loads_as_it_is(self) -> None:
        status, lines = migrate(install(self, "holzt-2008"))
        self.assertEqual(status, 0, "\n".join(lines))
        self.assertEqual(set(verdicts(lines).values()), {"ok"})

    def test_arguments_a_plugin_refuses(self) -> None:
        directory = install(self, "holzt-2008")
        (directory / "plugins").write_text("rhsbl <- these blacklist plugins blacklist\n"
                                           "check_basicheaders 3\n")
        status, lines = migrate(directory)
        self.assertEqual(status, 1)
        self.assertEqual(verdicts(lines), {"plugins 1": "error", "plugins 2": "changed"})
        self.assertIn("unknown argument '<-'", details(lines, "plugins 1")[0])
        self.assertIn("plugins 2    changed  check_basicheaders 3  ->  headers past 3 future 3", lines)

    def test_config_files_that_changed_meaning_and_qmails_control_directory(self) -> None:
        directory = install(self, "holzt-2008", files={"badrcptto_patterns": "^postmaster@"})
        qmail = Path(self.mktemp()).resolve()
        (qmail / "control").mkdir(parents=True)
        (qmail / "control" / "rcpthosts").write_text("example.com\n")
        set_environment(self, QMAIL=str(qmail))
        _, lines = migrate(directory)
        notes = [line for line in lines if line.startswith("note: ")]
        self.assertIn("note: config/badrcptto_patterns: not read (check_badrcptto_patterns was merged into "
                      "badrcptto): move its patterns into config/badrcptto", notes)
        self.assertIn(f"note: rcpthosts: not in this directory but in {qmail / 'control'}, where qpsmtpd "
                      "found them; write 'qmail' into config/config_fallback to read them there", notes)

    def test_a_directory_without_plugins(self) -> None:
        empty = Path(self.mktemp()).resolve()
        empty.mkdir(parents=True)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(cli_main(["migrate", str(empty)]), 2)
        self.assertIn("plugins does not exist", err.getvalue())
