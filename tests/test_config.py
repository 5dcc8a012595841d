"""qpsmtpd-style configuration files (reference §7)."""

from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from qptwisted.core.config import Config, ConfigError
from qptwisted.testing import make_engine


class ConfigTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.config = Config(str(self.directory))

    def write(self, name: str, text: str) -> Path:
        path = self.directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def test_comments_blank_lines_and_whitespace(self) -> None:
        self.write("rcpthosts",
                   "# local domains\n\n  example.com  \n\t# indented comment\nexample.net\t\n   \n")
        self.assertEqual(self.config.get_list("rcpthosts"), ["example.com", "example.net"])

    def test_inner_whitespace_kept(self) -> None:
        self.write("hosts_allow", "192.0.2.0/24  DENY   go away\n")
        self.assertEqual(self.config.get("hosts_allow"), "192.0.2.0/24  DENY   go away")

    def test_missing_file_is_empty(self) -> None:
        self.assertEqual(self.config.get_list("nonexistent"), [])
        self.assertIsNone(self.config.get("nonexistent"))
        self.assertEqual(self.config.get("nonexistent", "fallback"), "fallback")

    def test_get_returns_the_first_value(self) -> None:
        self.write("me", "\n# name\nmx.test\nignored.test\n")
        self.assertEqual(self.config.get("me"), "mx.test")

    def test_include_a_file(self) -> None:
        self.write("rcpthosts", "first.test\n$include more_rcpthosts\nlast.test\n")
        self.write("more_rcpthosts", "# included\nmiddle.test\n")
        self.assertEqual(self.config.get_list("rcpthosts"), ["first.test", "middle.test", "last.test"])

    def test_include_a_directory_in_sorted_order_skipping_dotfiles(self) -> None:
        self.write("plugins", "$include plugins.d\nqueue/discard\n")
        self.write("plugins.d/20-second", "rcpt_ok\n")
        self.write("plugins.d/10-first", "relay\n")
        self.write("plugins.d/.hidden", "never\n")
        self.write("plugins.d/30-third", "count_unrecognized_commands 4\n")
        (self.directory / "plugins.d" / "99-subdir").mkdir()
        self.assertEqual(self.config.get_list("plugins"),
                         ["relay", "rcpt_ok", "count_unrecognized_commands 4", "queue/discard"])

    def test_include_absolute_path(self) -> None:
        other = Path(self.mktemp()).resolve()
        other.mkdir()
        (other / "shared").write_text("shared.test\n", encoding="utf-8")
        self.write("rcpthosts", f"$include {other / 'shared'}\n")
        self.assertEqual(self.config.get_list("rcpthosts"), ["shared.test"])

    def test_nested_include(self) -> None:
        self.write("a", "$include b\na\n")
        self.write("b", "$include c\nb\n")
        self.write("c", "c\n")
        self.assertEqual(self.config.get_list("a"), ["c", "b", "a"])

    def test_same_file_included_twice_is_not_circular(self) -> None:
        self.write("a", "$include b\n$include b\n")
        self.write("b", "b\n")
        self.assertEqual(self.config.get_list("a"), ["b", "b"])

    def test_circular_include_is_an_error(self) -> None:
        self.write("a", "$include b\n")
        self.write("b", "$include a\n")
        with self.assertRaises(ConfigError) as caught:
            self.config.get_list("a")
        self.assertIn("circular", str(caught.exception))

    def test_self_include_is_an_error(self) -> None:
        self.write("loop", "x\n$include loop\n")
        self.assertRaises(ConfigError, self.config.get_list, "loop")

    def test_include_of_missing_file_is_empty(self) -> None:
        self.write("a", "one\n$include missing\ntwo\n")
        self.assertEqual(self.config.get_list("a"), ["one", "two"])

    def test_get_int(self) -> None:
        self.write("databytes", "10485760\n")
        self.write("timeout", " 300 seconds\n")
        self.assertEqual(self.config.get_int("databytes", 0), 10485760)
        self.assertEqual(self.config.get_int("timeout", 1200), 300)
        self.assertEqual(self.config.get_int("absent", 42), 42)

    def test_get_int_error_names_the_file(self) -> None:
        path = self.write("databytes", "ten megabytes\n")
        with self.assertRaises(ConfigError) as caught:
            self.config.get_int("databytes", 0)
        self.assertIn(str(path), str(caught.exception))
        self.assertIn("ten megabytes", str(caught.exception))

    def test_bad_int_stops_the_engine_build(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            make_engine([], config={"databytes": "lots"})
        self.assertIn("databytes", str(caught.exception))

    def test_undecodable_file_is_an_error_naming_it(self) -> None:
        path = self.directory / "me"
        path.write_bytes(b"\xff\xfe\xfa\n")
        with self.assertRaises(ConfigError) as caught:
            self.config.get("me")
        self.assertIn(str(path), str(caught.exception))

    def test_values_are_cached_until_rebuilt(self) -> None:
        path = self.write("me", "one.test\n")
        self.assertEqual(self.config.get("me"), "one.test")
        path.write_text("two.test\n", encoding="utf-8")
        self.assertEqual(self.config.get("me"), "one.test")
        self.assertEqual(Config(str(self.directory)).get("me"), "two.test")

    def test_path(self) -> None:
        self.assertEqual(self.config.path("me"), self.directory.absolute() / "me")
