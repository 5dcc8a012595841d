"""``qpsmtpd new-plugin NAME [--dir DIR]``: start a plugin from a skeleton that works, with its test.

Writes ``DIR/NAME.py`` (a plugin with its documentation in the house style,
one declared argument and one hook) and ``DIR/test_NAME.py`` (a trial test
that uses only ``qptwisted.testing`` and passes as written). ``DIR`` is
``./plugins`` unless given; a name with a category (``queue/archive``) goes
into a subdirectory, as ``config/plugins`` finds it in a ``plugin_dirs``
directory. Existing files are never overwritten.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

#: plugin names as ``config/plugins`` writes them: words, ``-`` or ``_``, an optional category
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(/[A-Za-z_][A-Za-z0-9_-]*)?\Z")

PLUGIN = '''"""{name}: refuse mail to one recipient.

Replace this text with what the plugin does, at which step of the SMTP
dialogue, and what the client sees: it is the plugin's documentation, and
``qpsmtpd help-plugin {name}`` prints its first paragraph with the arguments
declared below. docs/writing-plugins.md shows how to write a plugin;
docs/plugins.md lists every hook and what each answer does.

As it stands, the plugin refuses mail to one address at RCPT with ``550
Mail to <ADDRESS> not accepted here`` and leaves every other recipient to
the next plugin.

Argument: ``recipient ADDRESS``, the address to refuse (default
``hans@example.com``).

config/plugins::

    {name} recipient hans@example.com
"""

from __future__ import annotations

from typing import Any

from qptwisted import DECLINED, DENY, LOGINFO, Address, HookAnswer, Plugin, Transaction, arg


class {cls}(Plugin):
    """Refuse mail to one recipient."""

    name = "{name}"
    recipient: str = arg.str("hans@example.com", "the address to refuse")

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        """RCPT TO: refuse the one address; the next plugin decides about the others."""
        if rcpt.address.lower() == self.recipient.lower():
            self.log(LOGINFO, f"refused {{rcpt}}")
            return DENY, f"Mail to {{rcpt}} not accepted here"
        return DECLINED
'''

TEST = '''"""Tests of the {name} plugin: ``python -m twisted.trial test_{stem}`` (or ``pytest``) runs them."""

from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from qptwisted.testing import CaptureQueue, SMTPDialogue, make_engine

#: the directory config/plugin_dirs would list
PLUGIN_DIR = Path(__file__).resolve().{parents}


def dialogue() -> SMTPDialogue:
    """An SMTP connection in memory: {name}, rcpt_ok for example.com, and a queue that keeps the mail."""
    engine = make_engine(["{name} recipient hans@example.com", "rcpt_ok", CaptureQueue],
                         config={{"rcpthosts": "example.com"}}, plugin_dirs=[PLUGIN_DIR])
    return SMTPDialogue(engine)


class {cls}Tests(unittest.TestCase):
    def test_the_recipient_is_refused(self) -> None:
        smtp = dialogue()
        smtp.send("EHLO client.example.org")
        smtp.send("MAIL FROM:<a@example.org>")
        self.assertEqual(smtp.send("RCPT TO:<hans@example.com>"),
                         [(550, "5.7.1", "Mail to <hans@example.com> not accepted here")])

    def test_other_recipients_get_their_mail(self) -> None:
        smtp = dialogue()
        replies = smtp.deliver("<a@example.org>", ["<grete@example.com>"], "Subject: hi\\n\\nhello\\n")
        self.assertTrue(replies.accepted)
        [message] = smtp.engine.plugin("testing/capture").delivered
        self.assertEqual(message.recipients, ["<grete@example.com>"])
'''


def class_name(name: str) -> str:
    """``queue/my-archive`` -> ``MyArchive``."""
    words = re.split(r"[-_]+", name.rsplit("/", 1)[-1])
    return "".join(word[:1].upper() + word[1:] for word in words if word) or "Plugin"


def skeleton(name: str) -> dict[str, str]:
    """The files of plugin ``name``: relative path -> text."""
    module = name.replace("-", "_")
    stem = module.rsplit("/", 1)[-1]
    folder = module.rsplit("/", 1)[0] + "/" if "/" in module else ""
    cls = class_name(name)
    parents = "parents[1]" if folder else "parent"
    return {
        f"{folder}{stem}.py": PLUGIN.format(name=name, cls=cls),
        f"{folder}test_{stem}.py": TEST.format(name=name, stem=stem, cls=cls, parents=parents),
    }


def new_plugin(argv: Sequence[str]) -> int:
    """``qpsmtpd new-plugin NAME [--dir DIR]``: write a plugin skeleton and its test."""
    parser = argparse.ArgumentParser(prog="qpsmtpd new-plugin",
                                     description="Write NAME.py, a plugin to start from, and test_NAME.py, "
                                                 "its test, into DIR.")
    parser.add_argument("name", help="the plugin's name as config/plugins will write it, e.g. "
                                     "check_subject or queue/archive")
    parser.add_argument("--dir", "-d", default="plugins", help="where to write (default: ./plugins)")
    options = parser.parse_args(list(argv))
    name = options.name
    if not _NAME.match(name):
        print(f"qpsmtpd new-plugin: {name!r} is not a plugin name (letters, digits, - and _, "
              "and at most one category: queue/archive)", file=sys.stderr)
        return 2
    directory = Path(options.dir)
    files = {directory / relative: text for relative, text in skeleton(name).items()}
    existing = [str(path) for path in files if path.exists()]
    if existing:
        print(f"qpsmtpd new-plugin: {', '.join(existing)} already exist(s); nothing written", file=sys.stderr)
        return 1
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    plugin, test = files
    print(f"wrote {plugin} and {test}\n\n"
          f"Run the test:     cd {test.parent} && python -m twisted.trial {test.stem}\n"
          f"Load the plugin:  list {directory.resolve()} in config/plugin_dirs and add the line\n"
          f"                  '{name}' to config/plugins\n"
          f"Its help:         qpsmtpd help-plugin {name} --config CONFIG_DIR")
    return 0
