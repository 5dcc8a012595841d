"""docs/plugins.md cannot drift from the engine: its hook sections are checked against ``HOOKS``.

For every hook of ``qptwisted.HOOKS``, in order, the page has a section
``### `name```` whose first code line is the method's signature, with a
table of answers: every code of the hook's reply table shows that reply
(and says the connection is closed exactly when the hook closes it), the
"every plugin DECLINED" reply where the hook has one, and what a broken
plugin gets. The ```` ```python ```` blocks of the plugin pages must run, and
the hooks of the plugins they define must pass the engine's signature check.
(```` ```py ```` marks fragments that are not run.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial import unittest

import qptwisted
from qptwisted import HOOKS, Plugin
from qptwisted.core.hooks import hook_name
from qptwisted.core.replies import FAULT, Reply

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: hooks whose faults the session answers otherwise: QUIT says goodbye, AUTH answers 454 (smtp/sasl.py)
OWN_FAULT_REPLY = {"quit", "auth_plain", "auth_login", "auth_cram_md5", "auth"}
CLOSED = "the connection is closed"


def wire(reply: Reply) -> str:
    """A reply as the page writes it: ``550 5.7.1 text`` (``{addr}`` shown as ``<sender>``)."""
    return f"{reply.code} {reply.enhanced} {reply.text.format(addr='<sender>')}"


def hook_sections() -> dict[str, str]:
    """The hook sections of docs/plugins.md, in order, by hook name."""
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    hooks = text.split("\n## The hooks\n", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^### `([a-z0-9_]+)`\n", hooks, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def rows(section: str) -> dict[str, str]:
    """The answer table: the first cell -> the whole row."""
    found = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| answer ", "|---")):
            found[line.split(" | ")[0][2:]] = line
    return found


def row_for(section: str, code: str) -> str:
    """The row whose first cell names ``code`` (as `CODE`)."""
    for first, line in rows(section).items():
        if f"`{code}`" in re.findall(r"`[A-Z_]+`", first):
            return line
    raise AssertionError(f"no row for {code}")


class HookTableTests(unittest.TestCase):
    def test_one_section_per_hook_in_session_order(self) -> None:
        self.assertEqual(list(hook_sections()), list(HOOKS))

    def test_signatures(self) -> None:
        for name, section in hook_sections().items():
            first_code = re.search(r"^`(hook_[^`]*)`$", section, re.M)
            self.assertIsNotNone(first_code, name)
            assert first_code is not None
            self.assertEqual(first_code.group(1), HOOKS[name].signature(), name)

    def test_every_reply_of_the_reply_tables(self) -> None:
        for name, section in hook_sections().items():
            spec = HOOKS[name]
            for code, reply in spec.replies.items():
                line = row_for(section, code.name)
                self.assertIn(f"`{wire(reply)}`", line, (name, code))
                self.assertEqual(CLOSED in line, code in spec.closing, (name, code, line))
            if spec.declined is not None:
                self.assertIn(f"`{wire(spec.declined)}`", rows(section)["every plugin DECLINED"], name)
            else:
                self.assertNotIn("every plugin DECLINED", rows(section), name)

    def test_what_a_broken_plugin_gets(self) -> None:
        for name, section in hook_sections().items():
            spec = HOOKS[name]
            line = rows(section)["a broken plugin"]
            if not spec.fail_closed:
                self.assertIn("skipped", line, name)
            elif name not in OWN_FAULT_REPLY:
                self.assertIn(f"`{wire(FAULT)}`", line, name)
                self.assertEqual(CLOSED in line, spec.closing == frozenset(qptwisted.Code), name)

    def test_sync_hooks_say_so(self) -> None:
        for name, section in hook_sections().items():
            self.assertEqual("Must answer at once" in " ".join(section.split()), HOOKS[name].sync, name)

    def test_the_observers_list_the_hooks_they_do_not_hear(self) -> None:
        section = " ".join(hook_sections()["deny"].split())
        unheard = section.split("every hook but ", 1)[1].split(". ", 1)[0]
        self.assertEqual(re.findall(r"`([a-z0-9_]+)`", unheard),
                         [name for name, spec in HOOKS.items() if not spec.observed])

    def test_the_queue_is_waited_for(self) -> None:
        self.assertEqual([name for name, spec in HOOKS.items() if spec.settle], ["queue"])
        queue = " ".join(hook_sections()["queue"].split())
        self.assertIn("waits for a queue plugin however long it takes", queue)


class CodeBlockTests(unittest.TestCase):
    def test_python_blocks_run_and_their_hooks_fit(self) -> None:
        checked = 0
        for page in ("plugins.md", "writing-plugins.md"):
            text = (DOCS / page).read_text(encoding="utf-8")
            for block in re.findall(r"```python\n(.*?)```", text, re.S):
                namespace: dict[str, Any] = {"__name__": f"docs_{page}", "__file__": str(DOCS / page)}
                exec(compile(block, page, "exec"), namespace)
                for value in namespace.values():
                    if isinstance(value, type) and issubclass(value, Plugin) and value.__dict__.get("name"):
                        for attribute in dir(value):
                            if attribute.startswith("hook_"):
                                spec = HOOKS[hook_name(attribute[5:])]
                                self.assertIsNone(spec.check(getattr(value(None, ()), attribute)),
                                                  (page, value.name, attribute))
                                checked += 1
        self.assertGreater(checked, 5)


class LinkTests(unittest.TestCase):
    def test_the_pages_are_linked(self) -> None:
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        self.assertTrue("(docs/plugins.md)" in readme and "(docs/writing-plugins.md)" in readme)
        self.assertIn("(plugins.md)", (DOCS / "writing-plugins.md").read_text(encoding="utf-8"))

    def test_relative_links_of_the_plugin_pages_exist(self) -> None:
        for page in (DOCS / "plugins.md", DOCS / "writing-plugins.md", ROOT / "examples" / "README.md"):
            for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
                self.assertTrue((page.parent / target).exists(), (page.name, target))


class TutorialTests(unittest.TestCase):
    def test_the_tutorial_plugin_and_its_test_pass_under_trial(self) -> None:
        text = (DOCS / "writing-plugins.md").read_text(encoding="utf-8")
        [plugin] = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class Gone(Plugin)" in b]
        [test] = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class GoneTests" in b]
        work = Path(self.mktemp()).absolute()
        work.mkdir()
        (work / "gone.py").write_text(plugin, encoding="utf-8")
        (work / "test_gone.py").write_text(test, encoding="utf-8")
        run = subprocess.run([sys.executable, "-m", "twisted.trial", "--temp-directory",
                              str(work / "_trial_temp"), "test_gone"],
                             cwd=work, capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("PASSED (successes=2)", run.stdout)
