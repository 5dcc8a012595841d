"""Typed plugin arguments: reading a config/plugins line against the declarations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial import unittest

from qptwisted import ArgumentError, ConfigError, Plugin, arg
from qptwisted.core.arguments import help_text, parse_duration
from qptwisted.testing import make_engine, write_config


class Sample(Plugin):
    """A plugin with one argument of each kind."""

    name = "test_sample_args"
    directory = arg.path(help="where things go", positional=True)
    pattern = arg.str("", "what to match", positional=True)
    wait = arg.duration(1.0, "seconds to wait")
    count = arg.int(3, "how many")
    ratio = arg.float(0.5, "a fraction")
    strict = arg.bool(False, "be strict")
    only = arg.flag("relay only")
    hooks = arg.list(["rcpt"], "hooks to use")
    mode = arg.choice(("lenient", "strict"), "lenient", "policy")
    check_at = arg.choice(("connect", "data"), help="where to check", repeat=True, aliases=("check-at",))
    level = arg.level(None, "log level")


def load(*words: str, config: dict[str, Any] | None = None) -> Any:
    return make_engine([(Sample, words)], config=config).plugins[-1]


class ParseTests(unittest.TestCase):
    def test_defaults_and_required_positional(self) -> None:
        plugin = load("spool")
        self.assertEqual(plugin.directory, Path(plugin.engine.config.directory) / "spool")
        self.assertEqual((plugin.pattern, plugin.wait, plugin.count, plugin.ratio), ("", 1.0, 3, 0.5))
        self.assertEqual((plugin.strict, plugin.only, plugin.hooks, plugin.mode), (False, False, ["rcpt"],
                                                                                   "lenient"))
        self.assertEqual(plugin.check_at, [])
        self.assertIsNone(plugin.level)

    def test_every_spelling(self) -> None:
        plugin = load("/abs/dir", "%d/%l", "wait", "5m", "count=7", "RATIO", "0.25", "strict", "yes",
                      "only", "hooks", "rcpt,data", "mode", "STRICT", "check-at", "CONNECT", "check_at=data",
                      "level", "LOGINFO")
        self.assertEqual(plugin.directory, Path("/abs/dir"))
        self.assertEqual(plugin.pattern, "%d/%l")
        self.assertEqual((plugin.wait, plugin.count, plugin.ratio), (300.0, 7, 0.25))
        self.assertEqual((plugin.strict, plugin.only, plugin.hooks, plugin.mode),
                         (True, True, ["rcpt", "data"], "strict"))
        self.assertEqual(plugin.check_at, ["connect", "data"])
        self.assertEqual(plugin.level, 6)

    def test_one_reading_of_yes_and_no(self) -> None:
        for word, value in (("1", True), ("on", True), ("TRUE", True), ("0", False), ("off", False),
                            ("no", False), ("false", False)):
            self.assertIs(load("d", "strict", word).strict, value, word)
        with self.assertRaises(ArgumentError) as raised:
            load("d", "strict", "maybe")
        self.assertIn("'maybe' is not a yes/no value", str(raised.exception))

    def test_durations(self) -> None:
        self.assertEqual([parse_duration(t) for t in ("30", "90s", "5m", "2h", "1d", "1h30m", "1.5h", "1w")],
                         [30, 90, 300, 7200, 86400, 5400, 5400, 604800])
        for bad in ("", "5x", "m5", "1h 30"):
            with self.assertRaises(ValueError):
                parse_duration(bad)


class ErrorTests(unittest.TestCase):
    def message(self, *words: str) -> str:
        config = write_config(self.mktemp(), {"me": "mx.test",
                                              "plugins": [" ".join(("test_sample_args", *words))]})
        plugins_dir = Path(config) / "plugin_dirs_here"
        plugins_dir.mkdir()
        (plugins_dir / "test_sample_args.py").write_text(
            "from tests.test_arguments import Sample\n")
        write_config(config, {"plugin_dirs": "plugin_dirs_here"})  # relative: the config directory
        from qptwisted import Engine

        with self.assertRaises(ConfigError) as raised:
            Engine.from_config(str(config))
        return str(raised.exception)

    def test_wrong_value_names_plugin_argument_and_line(self) -> None:
        message = self.message("dir", "wait", "soon")
        self.assertIn("plugin test_sample_args: argument wait: 'soon' is not a duration", message)
        self.assertIn("plugins line 1 ('test_sample_args dir wait soon')", message)
        self.assertIn("qpsmtpd --help-plugin test_sample_args", message)

    def test_unknown_word_is_refused(self) -> None:
        message = self.message("dir", "%d", "surplus")
        self.assertIn("unknown argument 'surplus'", message)

    def test_missing_required_and_missing_value(self) -> None:
        self.assertIn("argument directory: is required", self.message())
        self.assertIn("argument count: needs a value", self.message("dir", "count"))
        self.assertIn("argument count: given twice", self.message("dir", "count", "1", "count=2"))
        self.assertIn("argument mode: 'odd' is not one of lenient, strict", self.message("d", "mode", "odd"))

    def test_help_text_lists_the_arguments(self) -> None:
        text = help_text(Sample)
        self.assertTrue(text.startswith("test_sample_args: "))
        for name in ("positional", "wait", "duration, default 1.0", "required", "flag", "repeatable",
                     "also check_at", "fail_open"):
            self.assertIn(name, text)


class LegacyTests(unittest.TestCase):
    def test_a_plugin_without_declarations_gets_its_words(self) -> None:
        class Legacy(Plugin):
            name = "test_legacy_words"

            def register(self, *args: str) -> None:
                self.words = args

        plugin: Any = make_engine([(Legacy, ("a", "b=c", "--x"))]).plugins[-1]
        self.assertEqual(plugin.words, ("a", "b=c", "--x"))
