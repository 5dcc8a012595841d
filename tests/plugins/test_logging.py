"""logging/warn and logging/file: the ``logging`` hook plugins."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

from twisted.trial import unittest

from qptwisted import LOGDEBUG, LOGERROR, LOGINFO, LOGWARN, ConfigError
from qptwisted.testing import make_engine


class WarnTests(unittest.TestCase):
    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def test_writes_up_to_its_level(self) -> None:
        engine = make_engine(config={"logging": "logging/warn 6"})
        engine.log(LOGINFO, "info line", plugin="rcpt_ok")
        engine.log(LOGDEBUG, "debug line", plugin="rcpt_ok")
        engine.log(LOGERROR, "error line")
        self.assertEqual(self.stderr.getvalue(),
                         f"{os.getpid()} rcpt_ok: info line\n{os.getpid()} error line\n")

    def test_default_level_is_loglevel(self) -> None:
        engine = make_engine(config={"logging": "logging/warn", "loglevel": "4"})
        engine.log(LOGWARN, "warned")
        engine.log(LOGINFO, "not shown")
        self.assertEqual(self.stderr.getvalue(), f"{os.getpid()} warned\n")

    def test_plugins_log_through_it(self) -> None:
        engine = make_engine(["rcpt_ok"], config={"logging": "logging/warn 7"})
        engine.plugins[-1].log(LOGINFO, "from", "a plugin")
        self.assertIn("rcpt_ok: from a plugin\n", self.stderr.getvalue())

    def test_without_logging_plugin_nothing_goes_to_stderr(self) -> None:
        engine = make_engine(config={"loglevel": "7"})
        engine.log(LOGERROR, "to the twisted log")
        self.assertEqual(self.stderr.getvalue(), "")


class FileLogTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()

    def engine(self, arguments: str) -> object:
        return make_engine(config={"logging": f"logging/file {arguments}", "loglevel": "4"})

    def test_strftime_path_and_level(self) -> None:
        engine = self.engine(f"loglevel 6 {self.directory}/log/qp-%Y%m%d.log")
        before = time.strftime("%Y%m%d")
        engine.log(LOGINFO, "hello", plugin="relay")  # type: ignore[attr-defined]
        engine.log(LOGDEBUG, "too chatty")  # type: ignore[attr-defined]
        after = time.strftime("%Y%m%d")
        written = list((self.directory / "log").iterdir())
        self.assertEqual(len(written), 1)
        self.assertIn(written[0].name, {f"qp-{before}.log", f"qp-{after}.log"})
        [line] = written[0].read_text().splitlines()
        self.assertRegex(line, rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {os.getpid()} relay: hello$")

    def test_level_defaults_to_loglevel_and_tsformat(self) -> None:
        engine = self.engine(f"tsformat [%Y] {self.directory}/plain.log")
        engine.log(LOGWARN, "kept")  # type: ignore[attr-defined]
        engine.log(LOGINFO, "dropped")  # type: ignore[attr-defined]
        [line] = (self.directory / "plain.log").read_text().splitlines()
        self.assertRegex(line, rf"^\[\d{{4}}\] {os.getpid()} kept$")

    def test_reopen_follows_a_rename(self) -> None:
        engine = self.engine(f"reopen {self.directory}/rotated.log")
        path = self.directory / "rotated.log"
        engine.log(LOGERROR, "first")  # type: ignore[attr-defined]
        path.rename(self.directory / "rotated.log.1")
        engine.log(LOGERROR, "second")  # type: ignore[attr-defined]
        self.assertTrue(path.read_text().endswith(" second\n"))
        self.assertNotIn("first", path.read_text())
        self.assertTrue((self.directory / "rotated.log.1").read_text().endswith(" first\n"))

    def test_without_reopen_the_handle_is_kept(self) -> None:
        engine = self.engine(f"{self.directory}/kept.log")
        path = self.directory / "kept.log"
        engine.log(LOGERROR, "first")  # type: ignore[attr-defined]
        path.rename(self.directory / "kept.log.1")
        engine.log(LOGERROR, "second")  # type: ignore[attr-defined]
        self.assertFalse(path.exists())
        self.assertEqual(len((self.directory / "kept.log.1").read_text().splitlines()), 2)

    def test_bad_arguments_fail_at_load(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            self.engine(f"loglevel x {self.directory}/x.log")
        self.assertIn("logging/file", str(raised.exception))
        with self.assertRaises(ConfigError) as raised:
            self.engine(f"sometimes {self.directory}/x.log")
        self.assertIn("sometimes", str(raised.exception))
