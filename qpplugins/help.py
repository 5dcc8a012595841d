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
    answer every HELP with ``502 Not implemented.``

A topic without a file gets ``504 Command parameter not implemented.``; a
bare HELP without a ``default`` file gets the engine's standard text. Files
are read once, at start-up.

config/plugins::

    help help_dir help
"""

from __future__ import annotations

import os

from qptwisted import DECLINED, DONE, OK, HookAnswer, Plugin, Transaction


class Help(Plugin):
    """HELP from files."""

    name = "help"

    def register(self, *args: str) -> None:
        """Read the help files."""
        words = list(args)
        if len(words) % 2:
            raise ValueError(f"help: arguments must be 'name value' pairs, got {words}")
        self.not_implemented = False
        self.texts: dict[str, str] = {}
        files: dict[str, str] = {}
        help_dir = str(self.engine.config.path("help"))
        for key, value in zip(words[::2], words[1::2], strict=True):
            key = key.lower()
            if key == "not_implemented":
                self.not_implemented = value not in ("0", "")
            elif key == "help_dir":
                help_dir = value if os.path.isabs(value) else str(self.engine.config.path(value))
            else:
                files[key] = value if os.path.isabs(value) else str(self.engine.config.path(value))
        if os.path.isdir(help_dir):
            for entry in os.listdir(help_dir):
                files.setdefault(entry.lower(), os.path.join(help_dir, entry))
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
