"""qpsmtpd's per-file config fallback (qmail's control directory), off unless config/config_fallback asks."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial import unittest

from qptwisted.core.config import Config, default_config_dir
from qptwisted.testing import make_engine, write_config


class FallbackTests(unittest.TestCase):
    def setUp(self) -> None:
        root = Path(self.mktemp()).resolve()
        self.config = write_config(root / "config", {"me": "mx.config.test", "plugins": "rcpt_ok"})
        self.qmail = root / "qmail"
        self.control = write_config(self.qmail / "control", {
            "me": "mx.qmail.test", "rcpthosts": ["example.com", "example.net"], "databytes": "1000",
            "more": ["from qmail"]})

    def test_off_unless_asked(self) -> None:
        config = Config(str(self.config))
        self.assertEqual(config.fallback_dirs(), [])
        self.assertEqual(config.get_list("rcpthosts"), [])

    def test_qmail_means_qmails_control_directory(self) -> None:
        self.patch(os, "environ", {**os.environ, "QMAIL": str(self.qmail)})
        (self.config / "config_fallback").write_text("# like qpsmtpd\nqmail\n")
        config = Config(str(self.config))
        self.assertEqual(config.fallback_dirs(), [self.control])
        # file by file: the config directory's own file wins, a missing one comes from qmail
        self.assertEqual(config.get("me"), "mx.config.test")
        self.assertEqual(config.get_list("rcpthosts"), ["example.com", "example.net"])
        self.assertEqual(config.path("rcpthosts"), self.control / "rcpthosts")
        self.assertEqual(config.path("nothing"), self.config / "nothing")

    def test_directories_in_order_and_variables(self) -> None:
        other = write_config(self.qmail / "other", {"rcpthosts": "other.test", "badhelo": "aol.com"})
        self.patch(os, "environ", {**os.environ, "QPT_OTHER": str(other)})
        (self.config / "config_fallback").write_text(f"$QPT_OTHER\n{self.control}\n")
        config = Config(str(self.config))
        self.assertEqual(config.get_list("rcpthosts"), ["other.test"])
        self.assertEqual(config.get_list("badhelo"), ["aol.com"])
        self.assertEqual(config.get("databytes"), "1000")

    def test_include_of_a_relative_name_uses_the_fallback(self) -> None:
        (self.config / "config_fallback").write_text(f"{self.control}\n")
        (self.config / "morercpthosts").write_text("local.test\n$include more\n")
        self.assertEqual(Config(str(self.config)).get_list("morercpthosts"), ["local.test", "from qmail"])

    def test_passed_by_an_embedding_application(self) -> None:
        config = Config(str(self.config), fallback=[self.control])
        self.assertEqual(config.get_int("databytes", 0), 1000)

    def test_the_engine_reads_settings_and_plugin_files_through_it(self) -> None:
        engine = make_engine(["rcpt_ok"], directory=str(self.config),
                             config={"config_fallback": str(self.control)})
        self.addCleanup(engine.close)
        self.assertEqual(engine.settings.databytes, 1000)
        self.assertEqual(engine.config_list("rcpthosts"), ["example.com", "example.net"])

    def test_qpsmtpd_config_names_the_config_directory(self) -> None:
        self.patch(os, "environ", {**os.environ, "QPSMTPD_CONFIG": str(self.config)})
        self.assertEqual(default_config_dir(), str(self.config))
