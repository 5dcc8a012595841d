"""``qpsmtpd new-plugin``: the skeleton and its test pass as written, under trial, in a fresh process."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

from qptwisted.service.cli import TOOLS, main
from qptwisted.service.newplugin import class_name


def run(*argv: str) -> tuple[int, str, str]:
    """The ``qpsmtpd`` command in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


class NewPluginTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).absolute() / "plugins"

    def test_the_generated_test_passes_under_trial(self) -> None:
        self.assertIn("new-plugin", TOOLS)
        self.assertEqual(run("new-plugin", "check_subject", "--dir", str(self.dir))[0], 0)
        self.assertEqual(run("new-plugin", "queue/my-archive", "--dir", str(self.dir))[0], 0)
        self.assertEqual(sorted(p.relative_to(self.dir).as_posix() for p in self.dir.rglob("*.py")),
                         ["check_subject.py", "queue/my_archive.py", "queue/test_my_archive.py",
                          "test_check_subject.py"])
        plugin = (self.dir / "check_subject.py").read_text()
        self.assertTrue(plugin.startswith('"""check_subject: '))
        self.assertIn("config/plugins::\n\n    check_subject recipient hans@example.com\n", plugin)
        self.assertIn('    recipient: str = arg.str("hans@example.com"', plugin)
        self.assertIn("def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any)", plugin)
        test = (self.dir / "test_check_subject.py").read_text()
        imports = [line for line in test.splitlines() if line.startswith(("import ", "from "))]
        self.assertEqual([line for line in imports if "qpt" in line],
                         ["from qptwisted.testing import CaptureQueue, SMTPDialogue, make_engine"])
        trial = subprocess.run([sys.executable, "-m", "twisted.trial", "--temp-directory",
                                str(self.dir.parent / "_trial_temp"), "test_check_subject",
                                "queue/test_my_archive.py"],
                               cwd=self.dir, capture_output=True, text=True, timeout=120)
        self.assertEqual(trial.returncode, 0, trial.stdout + trial.stderr)
        self.assertIn("PASSED (successes=4)", trial.stdout)

    def test_the_help_comes_from_the_docstring_and_the_declarations(self) -> None:
        run("new-plugin", "check_subject", "--dir", str(self.dir))
        config = self.dir.parent / "config"
        config.mkdir()
        (config / "plugin_dirs").write_text("../plugins\n")
        status, out, _ = run("help-plugin", "check_subject", "--config", str(config))
        self.assertEqual(status, 0)
        self.assertTrue(out.startswith("check_subject: refuse mail to one recipient.\n"))
        self.assertIn("recipient                text, default 'hans@example.com'", out)

    def test_existing_files_are_never_overwritten(self) -> None:
        self.dir.mkdir(parents=True)
        (self.dir / "test_mine.py").write_text("# my own tests\n")
        status, _, err = run("new-plugin", "mine", "--dir", str(self.dir))
        self.assertEqual(status, 1)
        self.assertIn("test_mine.py already exist", err)
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()), ["test_mine.py"])
        self.assertEqual((self.dir / "test_mine.py").read_text(), "# my own tests\n")

    def test_bad_names_are_refused(self) -> None:
        for name in ("../evil", "a/b/c", "9lives", "with space", "/abs"):
            status, _, err = run("new-plugin", name, "--dir", str(self.dir))
            self.assertEqual(status, 2, name)
            self.assertIn("is not a plugin name", err)
        self.assertFalse(self.dir.exists())

    def test_class_names(self) -> None:
        self.assertEqual([class_name(n) for n in ("check_subject", "queue/my-archive", "x")],
                         ["CheckSubject", "MyArchive", "X"])
