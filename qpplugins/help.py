"""help: answer HELP from help files, or say it is not implemented.

Arguments (``name value`` pairs):

``help_dir DIR``
    a directory of help files named after the topic in lower case
    (``mail``, ``rcpt`` ...); ``default`` answers a bare ``HELP``. Default:
    ``help`` in the config directory.
``COMMAND FILE``
    the help for one topic from ``FILE`` (relative names are taken in the
    config directory).
``not_implemented 1``
    answer every HELP with ``502 Not implemented.`` (yes/no, on/off work too)

A topic without a file gets ``504 Command parameter not implemented.``; a
bare HELP without a ``default`` file gets the engine's standard text. Files
are read once, at start-up.

config/plugins::

    help help_dir help
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from qptwisted import DECLINED, DONE, OK, ArgumentError, HookAnswer, Plugin, Transaction, arg

#: the declared arguments; every other ``name value`` pair is ``COMMAND FILE``
_OWN = ("help_dir", "not_implemented", "fail_open")


class Help(Plugin):
    """HELP from files."""

    name = "help"
    help_dir: Path = arg.path("help", "a directory of help files named after their topic (default: help "
                              "in the config directory); COMMAND FILE pairs add single topics")
    not_implemented: bool = arg.bool(False, "answer every HELP with 502 Not implemented.")

    def configure(self, words: Sequence[str] | None = None) -> None:
        """Take the ``COMMAND FILE`` pairs out of the line, then parse the declared arguments."""
        rest = list(self.args if words is None else words)
        own: list[str] = []
        self.topic_files: dict[str, Path] = {}
        while rest:
            word = rest.pop(0)
            if word.partition("=")[0].lower().replace("-", "_") in _OWN:
                own += [word] if "=" in word or not rest else [word, rest.pop(0)]
            elif not rest:
                raise ArgumentError(f"plugin {self.plugin_name}: argument {word}: needs a file "
                                    "(help COMMAND FILE)")
            else:
                self.topic_files[word.lower()] = self.engine.config.resolve(rest.pop(0))
        super().configure(own)

    def register(self, *args: str) -> None:
        """Read the help files."""
        self.texts: dict[str, str] = {}
        files = dict(self.topic_files)
        if self.help_dir.is_dir():
            for entry in os.listdir(self.help_dir):
                files.setdefault(entry.lower(), self.help_dir / entry)
        for topic, path in files.items():
            with open(path, encoding="utf-8") as handle:
                text = handle.read().rstrip("\n")
            if text:
                self.texts[topic] = text

    def hook_help(self, transaction: Transaction, rest: str = "") -> HookAnswer:
        connection = transaction.connection
        if self.not_implemented:
            connection.respond(502, "Not implemented.")
            return DONE
        topic = rest.split()[0].lower() if rest.split() else "default"
        text = self.texts.get(topic)
        if text is not None:
            return OK, text
        if topic == "default":
            return DECLINED
        connection.respond(504, "Command parameter not implemented.")
        return DONE
