"""The README's and the docs' examples must keep working; the README lists every stock plugin."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from qptwisted import OK
from qptwisted.testing import make_engine, make_transaction, run_hook

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
        from qptwisted.core.loader import discover

        index = discover()
        factories = index.stock()
        self.assertEqual(index.errors, [])
        rows = re.findall(r"^\| `([^`]+)` \| .* \| `([^`]+)` \|$", README.read_text(encoding="utf-8"), re.M)
        listed = {name: line for name, line in rows}
        stock = {name for name, factory in factories.items()
                 if getattr(factory, "__module__", "").startswith("qpplugins.")}
        self.assertEqual(sorted(stock - set(listed)), [])
        for name in stock:
            self.assertTrue(listed[name].split()[0] == name, (name, listed[name]))


class QueuePostExampleTests(unittest.TestCase):
    """The ``queue_post`` example of docs/queue-plugins.md logs the queue id of a real delivery."""

    @defer.inlineCallbacks
    def test_logs_the_maildir_queue_id(self) -> Any:
        import qptwisted

        docs = (README.parent / "docs" / "queue-plugins.md").read_text(encoding="utf-8")
        [block] = [b for b in re.findall(r"```python\n(.*?)```", docs, re.S) if "hook_queue_post" in b]
        namespace: dict[str, Any] = dict(vars(qptwisted))
        exec(block, namespace)
        logged: list[str] = []
        example = namespace["LogQueueId"]
        self.patch(example, "log", lambda plugin, level, message: logged.append(message))
        maildir = Path(self.mktemp()).resolve()
        engine = make_engine([f"queue/maildir {maildir}", example], clock=reactor)
        self.addCleanup(engine.close)  # and its Maildir writer process
        txn = make_transaction(engine, sender="<a@example.org>", recipients=["<b@example.com>"],
                               message=b"Subject: hi\n\nbody\n")
        result = yield run_hook(engine, "queue", txn)
        self.assertEqual(result.code, OK)
        yield run_hook(engine, "queue_post", txn)
        [stored] = (maildir / "new").iterdir()
        self.assertEqual(logged, [f"queued as {stored.name}"])
