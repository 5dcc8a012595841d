"""Plugin discovery: third-party dropins, config/plugin_dirs, instances, errors, twistd."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial import unittest

import twisted.plugins
from qptwisted import ConfigError
from qptwisted.core.engine import Engine
from qptwisted.core.loader import discover, parse_plugin_line
from qptwisted.testing import SMTPDialogue, make_engine, write_config

GATE = '''
from qptwisted import DECLINED, DENY, Plugin


class {cls}(Plugin):
    """Refuses the recipient named by its argument."""

    name = "{name}"

    def register(self, *args):
        self.victim = args[0] if args else "blocked"

    def hook_rcpt(self, transaction, rcpt, **params):
        if rcpt.user == self.victim:
            return DENY, "{name} says no to " + self.victim
        return DECLINED
'''


class DiscoveryBase(unittest.TestCase):
    def tempdir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="qpt-discovery-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def forget_modules(self, prefix: str) -> None:
        def forget() -> None:
            for name in [name for name in sys.modules if name.startswith(prefix)]:
                del sys.modules[name]

        self.addCleanup(forget)

    def dropin(self, files: dict[str, str]) -> Path:
        """A third-party distribution: ``ROOT/twisted/plugins/*.py``, no ``__init__.py``, on sys.path."""
        root = self.tempdir()
        plugins = root / "twisted" / "plugins"
        plugins.mkdir(parents=True)
        for module, source in files.items():
            (plugins / f"{module}.py").write_text(textwrap.dedent(source))
            self.forget_modules(f"twisted.plugins.{module}")
        sys.path.append(str(root))
        # twisted.plugins computed its __path__ from sys.path when it was first
        # imported; a distribution installed later is added the same way
        twisted.plugins.__path__.append(str(plugins))

        def remove() -> None:
            sys.path.remove(str(root))
            twisted.plugins.__path__.remove(str(plugins))

        self.addCleanup(remove)
        return root

    def unique(self, stem: str) -> str:
        return f"{stem}_{uuid.uuid4().hex[:8]}"


class ThirdPartyDropinTests(DiscoveryBase):
    def test_dropin_is_discovered_and_loaded_by_name(self) -> None:
        module = self.unique("thirdparty_qp")
        name = self.unique("thirdparty_gate")
        root = self.dropin({module: GATE.format(cls="Gate", name=name)})
        self.assertFalse((root / "twisted" / "__init__.py").exists())
        self.assertFalse((root / "twisted" / "plugins" / "__init__.py").exists())

        factories = discover().stock()
        self.assertIn(name, factories)
        self.assertEqual(factories[name].__module__, f"twisted.plugins.{module}")
        self.assertIn("rcpt_ok", factories)  # the stock plugins are still there

        config = write_config(self.tempdir(), {"me": "mx.test", "plugins": [f"{name} hans", "rcpt_ok"]})
        engine = Engine.from_config(str(config))
        self.assertEqual([plugin.plugin_name for plugin in engine.plugins], [name, "rcpt_ok"])
        smtp = SMTPDialogue(engine)
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        [(code, _, text)] = smtp.send("RCPT TO:<hans@mx.test>")
        self.assertEqual((code, text), (550, f"{name} says no to hans"))
        self.assertEqual(smtp.send("RCPT TO:<fritz@mx.test>")[0][0], 250)
        smtp.close()

    def test_broken_dropin_is_reported_by_name(self) -> None:
        module = self.unique("thirdparty_broken")
        self.dropin({module: "import qptwisted_no_such_dependency\n"})
        index = discover()
        factories, errors = index.stock(), index.errors
        self.flushLoggedErrors(ModuleNotFoundError)  # getPlugins logs it, too
        self.assertIn("rcpt_ok", factories)  # one broken dropin does not hide the others
        [error] = [error for error in errors if module in error]
        self.assertIn("qptwisted_no_such_dependency", error)
        self.assertIn("ModuleNotFoundError", error)

        # a config that lists the plugin fails at start-up naming it, the line and the import error
        config = write_config(self.tempdir(), {"me": "mx.test",
                                               "plugins": ["rcpt_ok", "thirdparty_broken_gate x"]})
        with self.assertRaises(ConfigError) as raised:
            Engine.from_config(str(config))
        self.flushLoggedErrors(ModuleNotFoundError)
        message = str(raised.exception)
        self.assertIn("'thirdparty_broken_gate'", message)
        self.assertIn("line 2 ('thirdparty_broken_gate x')", message)
        self.assertIn(str(config / "plugins"), message)
        self.assertIn(module, message)

    def test_dropin_with_syntax_error_is_reported_by_file(self) -> None:
        module = self.unique("thirdparty_syntax")
        self.dropin({module: "def broken(:\n"})
        index = discover()
        factories, errors = index.stock(), index.errors
        self.flushLoggedErrors(SyntaxError)
        self.assertIn("rcpt_ok", factories)
        [error] = [error for error in errors if module in error]
        self.assertIn("SyntaxError", error)

    def test_missing_plugin_is_a_config_error(self) -> None:
        config = write_config(self.tempdir(), {"me": "mx.test", "plugins": ["rcpt_ok", "no_such_plugin"]})
        with self.assertRaises(ConfigError) as raised:
            Engine.from_config(str(config))
        self.assertIn("'no_such_plugin' not found", str(raised.exception))


class PluginDirsTests(DiscoveryBase):
    def setUp(self) -> None:
        self.forget_modules("qpplugins_dir_")

    def test_plugin_from_config_plugin_dirs(self) -> None:
        directory = self.tempdir()
        name = self.unique("local_gate")
        (directory / f"{name}.py").write_text(GATE.format(cls="LocalGate", name=name))
        self.assertTrue(discover([directory]).find(name))
        self.assertNotIn(name, discover().stock())

        engine = make_engine([f"{name} otto", "rcpt_ok"], config={"plugin_dirs": str(directory)})
        smtp = SMTPDialogue(engine)
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(smtp.send("RCPT TO:<otto@mx.test>")[0][0], 550)
        self.assertEqual(smtp.send("RCPT TO:<anna@mx.test>")[0][0], 250)
        smtp.close()

    def test_instances_with_separate_arguments(self) -> None:
        directory = self.tempdir()
        name = self.unique("multi_gate")
        (directory / f"{name}.py").write_text(GATE.format(cls="MultiGate", name=name))
        engine = make_engine([f"{name}:0 anna", f"{name}:1 otto", "rcpt_ok"],
                             config={"plugin_dirs": str(directory)})
        first, second, _ = engine.plugins
        self.assertEqual((first.plugin_name, first.args), (f"{name}:0", ("anna",)))
        self.assertEqual((second.plugin_name, second.args), (f"{name}:1", ("otto",)))
        self.assertIs(type(first), type(second))
        self.assertEqual([reg.plugin for reg in engine.hooks.chains["rcpt"]],
                         [f"{name}:0", f"{name}:1", "rcpt_ok"])
        smtp = SMTPDialogue(engine)
        smtp.send("EHLO client.test", "MAIL FROM:<a@example.org>")
        self.assertEqual(smtp.send("RCPT TO:<anna@mx.test>")[0], (550, "5.7.1", f"{name} says no to anna"))
        self.assertEqual(smtp.send("RCPT TO:<otto@mx.test>")[0], (550, "5.7.1", f"{name} says no to otto"))
        self.assertEqual(smtp.send("RCPT TO:<hans@mx.test>")[0][0], 250)
        smtp.close()

    def test_broken_module_in_plugin_dirs_is_reported_with_its_path(self) -> None:
        directory = self.tempdir()
        (directory / "bad.py").write_text("raise RuntimeError('plugin module exploded')\n")
        with self.assertRaises(ConfigError) as raised:
            make_engine(["rcpt_ok", "bad"], config={"plugin_dirs": str(directory)})
        self.assertIn(str(directory / "bad.py"), str(raised.exception))
        self.assertIn("exploded", str(raised.exception))

    def test_parse_plugin_line(self) -> None:
        self.assertEqual(parse_plugin_line("queue/maildir:2  /var/mail  %d/%l"),
                         ("queue/maildir", "queue/maildir:2", ("/var/mail", "%d/%l")))
        self.assertEqual(parse_plugin_line("rcpt_ok"), ("rcpt_ok", "rcpt_ok", ()))


class TwistdPluginTests(unittest.TestCase):
    def test_service_maker_is_discovered(self) -> None:
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("qpsmtpd", makers)
        self.assertEqual(getattr(makers["qpsmtpd"], "module", None), "qptwisted.service.tap")

    def test_twistd_help_lists_qpsmtpd(self) -> None:
        code = "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"
        result = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True,
                                text=True, timeout=120, cwd=tempfile.gettempdir())
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"(?m)^\s+qpsmtpd\s+qpsmtpd-compatible SMTP server")
