"""Declared plugin arguments: how a ``config/plugins`` line is read against the declarations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from qptwisted import ArgumentError, Plugin, arg
from qptwisted.core.arguments import help_text, parse_duration
from qptwisted.testing import make_engine


class Sample(Plugin):
    name = "test_arguments_sample"
    target = arg.str(help="where to", positional=True)
    port = arg.int(25, "which port", positional=True)
    verbose = arg.flag("say more")
    wait = arg.duration(1, "how long", aliases=("delay",))
    words = arg.list([], "some words")


class Spread(Plugin):
    name = "test_arguments_spread"
    first = arg.str(help="the first word", positional=True)
    rest = arg.str(help="every other word", positional=True, repeat=True)


class Domains(Plugin):
    name = "test_arguments_domains"
    domains = arg.list(help="the domains", positional=True)
    verbose = arg.flag("say more")


class Files(Plugin):
    name = "test_arguments_files"
    config_file = arg.path("map", "next to the configuration")
    data_dir = arg.path("spool", "beside the running server", workdir=True)


class Silent(Plugin):
    name = "test_arguments_silent"
    strict_arguments = True


class Legacy(Plugin):
    name = "test_arguments_legacy"

    def register(self, *args: str) -> None:
        """Keep the words as they came."""
        self.words = args


class Rewriting(Plugin):
    name = "test_arguments_rewriting"
    count = arg.int(1, "how many", positional=True)

    def configure(self, words: Sequence[str] | None = None) -> None:
        """Drop the x around the number."""
        super().configure([word.strip("x") for word in self.args])


def load(cls: type[Plugin], *words: str) -> Any:
    """An instance of ``cls`` loaded with ``words`` as its line."""
    engine = make_engine()
    return engine.add_plugin(cls(engine, words))


class ParseTests(unittest.TestCase):
    def test_positional_named_and_flag(self) -> None:
        sample = load(Sample, "mx.test", "2525", "verbose", "delay=5m", "words", "a,b c")
        self.assertEqual((sample.target, sample.port, sample.verbose, sample.wait, sample.words),
                         ("mx.test", 2525, True, 300.0, ["a", "b", "c"]))

    def test_a_positional_argument_may_be_named(self) -> None:
        sample = load(Sample, "port", "587", "target=mx.test")
        self.assertEqual((sample.target, sample.port), ("mx.test", 587))
        sample = load(Sample, "port=587", "mx.test")  # the free slot is the first one left
        self.assertEqual((sample.target, sample.port), ("mx.test", 587))

    def test_defaults(self) -> None:
        sample = load(Sample, "mx.test")
        self.assertEqual((sample.port, sample.verbose, sample.wait, sample.words), (25, False, 1, []))

    def test_given_twice_is_an_error(self) -> None:
        with self.assertRaises(ArgumentError) as raised:
            load(Sample, "mx.test", "wait", "1", "delay", "2")
        self.assertIn("argument wait: given twice", str(raised.exception))
        self.assertRaises(ArgumentError, load, Sample, "mx.test", "25", "port=26")

    def test_unknown_name_value_is_an_error_but_urls_fill_positionals(self) -> None:
        with self.assertRaises(ArgumentError) as raised:
            load(Sample, "mx.test", "colour=blue")
        self.assertIn("unknown argument 'colour'", str(raised.exception))
        self.assertEqual(load(Sample, "https://mx.test/?a=b").target, "https://mx.test/?a=b")

    def test_repeatable_positional_takes_the_rest(self) -> None:
        spread = load(Spread, "one", "two", "three", "fail_open", "yes")
        self.assertEqual((spread.first, spread.rest, spread.fail_open), ("one", ["two", "three"], True))

    def test_positional_list_takes_every_word_left_with_spaces_or_commas(self) -> None:
        for words in (("a.test", "b.test"), ("a.test,b.test",), ("a.test,", "b.test", "verbose"),
                      ("domains", "a.test", "b.test")):
            self.assertEqual(load(Domains, *words).domains, ["a.test", "b.test"], words)
        with self.assertRaises(ArgumentError) as raised:
            load(Domains, "verbose")
        self.assertIn("argument domains: is required", str(raised.exception))
        self.assertIn("[domains]                list, required; every word left", help_text(Domains))

    def test_paths(self) -> None:
        files = load(Files)
        self.assertEqual(files.config_file, files.engine.config.directory / "map")
        self.assertEqual(files.data_dir, Path.cwd() / "spool")
        files = load(Files, "config_file", "/etc/map", "data_dir", "/var/spool/qp")
        self.assertEqual((files.config_file, files.data_dir), (Path("/etc/map"), Path("/var/spool/qp")))

    def test_strict_plugin_without_arguments_refuses_words(self) -> None:
        self.assertFalse(load(Silent).fail_open)
        with self.assertRaises(ArgumentError) as raised:
            load(Silent, "loud")
        self.assertIn("plugin test_arguments_silent: arguments: unknown argument 'loud'",
                      str(raised.exception))

    def test_legacy_plugin_gets_its_words(self) -> None:
        self.assertEqual(load(Legacy, "any", "thing").words, ("any", "thing"))

    def test_configure_may_rewrite_the_words(self) -> None:
        self.assertEqual(load(Rewriting, "x5x").count, 5)

    def test_durations(self) -> None:
        self.assertEqual([parse_duration(text) for text in ("30", "90s", "5m", "1h30m", "1.5d")],
                         [30, 90, 300, 5400, 129600])
        self.assertRaises(ValueError, parse_duration, "soon")
