"""The example plugins of ``examples/plugins`` and their tests.

The examples' own tests (``examples/plugins/test_*.py``) are loaded here, so
``pytest tests`` and ``trial tests`` run them. The promise they keep is
checked too: each test file is under 30 lines, and each plugin has no more
lines of code than the seed talk's Perl plugin it redoes. Lines of code are
counted the same way for both: lines that are not blank, not only a comment,
and (in Python) not part of a docstring.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

from twisted.trial import unittest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "plugins"

#: lines of Perl code of each seed plugin (seed file, slide or section): the examples' upper bound
SEEDS = {
    "quit_fortune": 11,     # 002, "My first plugin!"
    "basic_headers": 11,    # 002, "Check basic headers"
    "earlytalker": 17,      # 002, "Enforce 'server says hello first' protocol"
    "save_to_db": 12,       # 002, "Save incoming mail to DB"
    "maildir_domain": 112,  # 003, the blog post's queue/maildir-domain
    "block_subject": 47,    # 004, "A simple subject filter"
    "web_gateway": 75,      # 004, the SMTP to web gateway ("The Source", the login slide once)
}


def code_lines(path: Path) -> int:
    """Lines that are not blank, not only a comment, and not inside a docstring."""
    source = path.read_text(encoding="utf-8")
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return sum(1 for number, line in enumerate(source.splitlines(), 1)
               if line.strip() and not line.lstrip().startswith("#") and number not in docstrings)


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _example_cases() -> dict[str, type[unittest.TestCase]]:
    """The test cases of ``examples/plugins/test_*.py``, by the name they get here."""
    cases = {}
    for path in sorted(EXAMPLES.glob("test_*.py")):
        module = _load(path)
        for _, case in inspect.getmembers(module, inspect.isclass):
            if issubclass(case, unittest.TestCase) and case.__module__ == module.__name__:
                cases[f"Example{case.__name__}"] = case
    return cases


# as attributes of this module, pytest and trial collect them from here
globals().update(_example_cases())


class ExampleRulesTests(unittest.TestCase):
    def test_every_seed_plugin_has_an_example_and_a_test(self) -> None:
        plugins = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_"))
        self.assertEqual(plugins, sorted(SEEDS))
        for name in SEEDS:
            self.assertTrue((EXAMPLES / f"test_{name}.py").is_file(), name)

    def test_each_plugin_is_no_longer_than_the_seeds_perl(self) -> None:
        for name, perl in SEEDS.items():
            path = EXAMPLES / f"{name}.py"
            first = path.read_text(encoding="utf-8").splitlines()[0]
            self.assertRegex(first, rf"^# Seed 00\d .*: {perl} lines of Perl\.$", name)
            self.assertLessEqual(code_lines(path), perl, name)

    def test_each_test_is_under_30_lines(self) -> None:
        for path in EXAMPLES.glob("test_*.py"):
            self.assertLess(len(path.read_text(encoding="utf-8").splitlines()), 30, path.name)

    def test_only_the_public_api(self) -> None:
        allowed = re.compile(r"(qptwisted|qptwisted\.lib(\.\w+)?|qptwisted\.testing(\.\w+)?)$")
        for path in EXAMPLES.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
                for module in modules:
                    if module.split(".")[0] in ("qptwisted", "qpplugins"):
                        self.assertRegex(module, allowed, path.name)
                        self.assertFalse(module.startswith("qptwisted.testing") and
                                         not path.name.startswith("test_"), path.name)

    def test_line_counting(self) -> None:
        sample = Path(self.mktemp())
        sample.write_text('# a comment\n"""A docstring\nof two lines."""\n\nimport os\n\n\ndef f() -> None:\n'
                          '    """Doc."""\n    return None  # trailing comment\n', encoding="utf-8")
        self.assertEqual(code_lines(sample), 3)

    def test_the_readme_lists_every_example(self) -> None:
        readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
        listed = re.findall(r"^- \[`(\w+)`\]\(plugins/(\w+)\.py\): .+\.$", readme, re.M)
        self.assertEqual(sorted(listed), sorted((name, name) for name in SEEDS))
