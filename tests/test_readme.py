"""The README's plugin-writing example and its trial test must keep working."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

README = Path(__file__).resolve().parent.parent / "README.md"


class ReadmeExampleTests(unittest.TestCase):
    def test_plugin_example_and_its_test_pass_under_trial(self) -> None:
        blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
        plugin = next(b for b in blocks if "class BlockRecipient(Plugin)" in b)
        test = next(b for b in blocks if "class BlockRecipientTests" in b)
        work = Path(self.mktemp())
        (work / "myplugins").mkdir(parents=True)
        (work / "myplugins" / "__init__.py").write_text("")
        (work / "myplugins" / "block_recipient.py").write_text(plugin)
        (work / "test_block_recipient.py").write_text(test)
        run = subprocess.run([sys.executable, "-m", "twisted.trial", "--temp-directory",
                              str(work / "_trial_temp"), "test_block_recipient"],
                             cwd=work, capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("PASSED (successes=2)", run.stdout)


class ReadmePluginListTests(unittest.TestCase):
    def test_every_stock_plugin_is_listed_with_a_config_line(self) -> None:
        from qptwisted.loader import discover

        factories, errors = discover()
        self.assertEqual(errors, [])
        rows = re.findall(r"^\| `([^`]+)` \| .* \| `([^`]+)` \|$", README.read_text(encoding="utf-8"), re.M)
        listed = {name: line for name, line in rows}
        stock = {name for name, factory in factories.items()
                 if getattr(factory, "__module__", "").startswith("qpplugins.")}
        self.assertEqual(sorted(stock - set(listed)), [])
        for name in stock:
            self.assertTrue(listed[name].split()[0] == name, (name, listed[name]))
