"""Typed plugin arguments: declared once on the class, parsed once at load, explained by ``--help-plugin``.

A plugin declares what its ``config/plugins`` line may say::

    class Greylisting(PolicyPlugin):
        name = "greylisting"
        black_timeout = arg.duration(50 * 60, "how long a new triplet is refused")
        db_dir = arg.path("greylisting", "where the SQLite store lives (relative: config directory)")
        p0f = arg.str(None, "only greylist these operating systems (genre=windows)")

    config/plugins:   greylisting black_timeout 10m db_dir /var/lib/qp

After loading, ``self.black_timeout`` is ``600.0``. Words on the line are
read left to right: ``name value`` or ``name=value`` for a declared name
(``-`` and ``_`` are the same; a positional argument may be named too), a
declared flag alone, anything else fills the next positional argument that
is still empty (a repeatable positional one, or a positional ``arg.list``,
takes every word left: ``block_subject a.test b.test`` and
``block_subject a.test,b.test`` give the same list). A wrong
value, an unknown name (also an unknown ``name=value``) or a missing
required argument stops the start with a message that names the plugin,
the argument and the config line.

Relative paths: ``arg.path`` takes them in the config directory (certificates,
map files, databases); ``arg.path(..., workdir=True)`` in the directory the
server was started in (Maildirs, log files, stores: where the sample
configuration's ``spool/`` lives, and where qpsmtpd, started in its home
directory, found them). Either way the value is an absolute path, fixed at
load.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from qptwisted.core.codes import parse_level
from qptwisted.core.config import ConfigError, parse_bool

if TYPE_CHECKING:
    from qptwisted.interfaces import IQPPlugin as Plugin

_T = TypeVar("_T")


class ArgumentError(ConfigError):
    """A plugin argument that cannot be used; the message names plugin and argument."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: the default of an argument that must be given
REQUIRED: Any = _Required()

#: ``name=value`` with a name that could be declared (URLs, DSNs and patterns are not)
_NAMED = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds from ``30``, ``30s``, ``5m``, ``2h``, ``1d``, ``1w`` or sums such as ``1h30m``."""
    text = text.strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2).lower()]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"{text!r} is not a duration (30, 90s, 5m, 2h, 1d, 1h30m)")
    return total


@dataclass(frozen=True)
class Kind(Generic[_T]):
    """How one type of argument is read from its words and shown in help."""

    label: str
    parse: Callable[[str, Plugin], _T]


def _text(value: str, plugin: Plugin) -> str:
    return value


def _integer(value: str, plugin: Plugin) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None


def _number(value: str, plugin: Plugin) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None


def _octal(value: str, plugin: Plugin) -> int:
    try:
        return int(value, 8)
    except ValueError:
        raise ValueError(f"{value!r} is not an octal mode such as 0600") from None


def _duration(value: str, plugin: Plugin) -> float:
    return parse_duration(value)


def _boolean(value: str, plugin: Plugin) -> bool:
    return parse_bool(value)


def _level(value: str, plugin: Plugin) -> int:
    return parse_level(value, plugin.engine.loglevel)


def _path(value: str, plugin: Plugin) -> Path:
    return plugin.engine.config.resolve(value)


def _workdir_path(value: str, plugin: Plugin) -> Path:
    return plugin.engine.config.resolve(value, workdir=True)


def _words(value: str, plugin: Plugin) -> list[str]:
    return [word for word in re.split(r"[,\s]+", value) if word]


TEXT = Kind("text", _text)
INTEGER = Kind("integer", _integer)
NUMBER = Kind("number", _number)
OCTAL = Kind("octal mode", _octal)
DURATION = Kind("duration", _duration)
BOOLEAN = Kind("yes/no", _boolean)
LEVEL = Kind("log level", _level)
PATH = Kind("path", _path)
WORKDIR_PATH = Kind("path (relative: in the directory the server started in)", _workdir_path)
WORDS = Kind("list", _words)


class Argument(Generic[_T]):
    """One declared argument; a descriptor whose value is the parsed one.

    ``positional`` arguments are filled in order by words that are not
    ``name value`` pairs (their name may be given too: qpsmtpd lines such as
    ``noop_counter 5`` and ``noop_counter max 5`` both work; a repeatable
    one, and a list (``arg.list``), takes every word left); ``flag`` arguments are true when their name is
    present and take no value; ``repeat`` collects every occurrence into a
    list; ``choices`` limits the (lower-cased) values; ``aliases`` are other
    names for the same argument (qpsmtpd's old spellings).
    """

    def __init__(self, kind: Kind[Any], default: Any = REQUIRED, help: str = "", *,  # noqa: A002
                 positional: bool = False, flag: bool = False, repeat: bool = False,
                 choices: Sequence[str] | None = None, aliases: Iterable[str] = ()) -> None:
        self.kind = kind
        self.default = default
        self.help = help
        self.positional = positional
        self.flag = flag
        self.repeat = repeat
        self.choices = tuple(choices) if choices else None
        self.aliases = tuple(_key(alias) for alias in aliases)
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Argument[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> _T: ...

    def __get__(self, instance: object | None, owner: type) -> Any:
        if instance is None:
            return self
        values = getattr(instance, "_arguments", None)
        if values is None or self.name not in values:
            return [] if self.repeat and self.default is REQUIRED else self.default
        return values[self.name]

    def __set__(self, instance: object, value: Any) -> None:
        instance.__dict__.setdefault("_arguments", {})[self.name] = value

    @property
    def greedy(self) -> bool:
        """True for a positional argument that takes every positional word left."""
        return self.positional and (self.repeat or self.kind is WORDS)

    @property
    def required(self) -> bool:
        """True when the line must give it."""
        return self.default is REQUIRED and not self.repeat and not self.flag

    def read(self, text: str, plugin: Plugin) -> Any:
        """The value of one word (``ValueError`` with the reason when it is wrong)."""
        if self.choices is not None:
            word = text.lower()
            if word not in self.choices:
                raise ValueError(f"{text!r} is not one of {', '.join(self.choices)}")
            text = word
        return self.kind.parse(text, plugin)

    def describe(self) -> str:
        """The argument as ``--help-plugin`` shows it."""
        kind = "one of " + "|".join(self.choices) if self.choices else self.kind.label
        if self.flag:
            kind = "flag"
        if self.required:
            default = "required"
        elif self.flag or self.default is REQUIRED:
            default = ""
        elif self.kind is OCTAL and isinstance(self.default, int):
            default = f"default {self.default:04o}"
        else:
            default = f"default {self.default!r}" if not isinstance(self.default, Path) else \
                f"default {str(self.default)!r}"
        where = f"[{self.name}]" if self.positional else self.name
        extra = "; repeatable" if self.repeat else "; every word left" if self.greedy else ""
        alias = f"; also {', '.join(self.aliases)}" if self.aliases else ""
        details = ", ".join(part for part in (kind, default) if part)
        return f"{where:<24} {details}{extra}{alias}\n{'':<24} {self.help}".rstrip()


def _key(word: str) -> str:
    return word.lower().replace("-", "_")


def declared(cls: type) -> list[Argument[Any]]:
    """The arguments ``cls`` and its bases declare, in declaration order (bases first)."""
    seen: dict[str, Argument[Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Argument):
                seen.pop(name, None)
                seen[name] = value
    return list(seen.values())


def parse_arguments(plugin: Plugin, words: Sequence[str]) -> dict[str, Any]:
    """Read ``words`` (a ``config/plugins`` line after the name) against the plugin's declarations."""
    arguments = declared(type(plugin))
    by_key: dict[str, Argument[Any]] = {}
    for argument in arguments:
        by_key[_key(argument.name)] = argument
        for alias in argument.aliases:
            by_key[alias] = argument
    positionals = [argument for argument in arguments if argument.positional]
    values: dict[str, Any] = {}
    name = plugin.plugin_name

    def fail(argument: Argument[Any] | None, problem: str) -> ArgumentError:
        what = f"argument {argument.name}" if argument is not None else "arguments"
        return ArgumentError(f"plugin {name}: {what}: {problem} (qpsmtpd --help-plugin {plugin.name} "
                             "lists the arguments)")

    def unknown(word: str) -> ArgumentError:
        known = ", ".join(sorted(by_key)) or "none"
        return fail(None, f"unknown argument {word!r} (known: {known})")

    def store(argument: Argument[Any], text: str, more: bool = False) -> None:
        try:
            value = argument.read(text, plugin)
        except ValueError as err:
            raise fail(argument, str(err)) from None
        if argument.repeat:
            values.setdefault(argument.name, []).append(value)
        elif more and argument.name in values:
            values[argument.name] = values[argument.name] + value  # a positional list: one more word
        elif argument.name in values:
            raise fail(argument, "given twice")
        else:
            values[argument.name] = value

    def next_positional() -> Argument[Any] | None:
        for argument in positionals:
            if argument.greedy or argument.name not in values:
                return argument
        return None

    index = 0
    while index < len(words):
        word = words[index]
        key, equals, inline = word.partition("=")
        named = by_key.get(_key(key))
        if named is not None and equals:
            store(named, inline)
            index += 1
        elif named is not None and named.flag:
            values[named.name] = True
            index += 1
        elif named is not None:
            if index + 1 >= len(words):
                raise fail(named, "needs a value")
            store(named, words[index + 1])
            index += 2
        elif equals and _NAMED.match(key):
            raise unknown(key)
        else:
            slot = next_positional()
            if slot is None:
                raise unknown(word)
            store(slot, word, more=slot.greedy)
            index += 1
    for argument in arguments:
        if argument.name not in values and argument.required:
            raise fail(argument, "is required")
        if argument.name not in values and argument.kind in (PATH, WORKDIR_PATH) \
                and isinstance(argument.default, str):
            values[argument.name] = argument.kind.parse(argument.default, plugin)
    return values


def help_text(cls: type) -> str:
    """What ``qpsmtpd --help-plugin NAME`` prints: the docstring's summary and the arguments."""
    doc = (cls.__doc__ or "").strip()
    module = __import__(cls.__module__, fromlist=["__doc__"])
    summary = (module.__doc__ or doc).strip().split("\n\n")[0]
    name = getattr(cls, "name", "") or cls.__name__
    lines = [summary if summary.startswith(f"{name}:") else f"{name}: {summary}", ""]
    arguments = declared(cls)
    if not arguments:
        lines.append("Declares no arguments (it reads them itself; see its documentation).")
    else:
        lines.append("Arguments (name value, or name=value; positional ones in order):")
        lines += [argument.describe() for argument in arguments]
    return "\n".join(lines)


def _text_argument(default: Any = REQUIRED, help: str = "", **options: Any) -> Any:  # noqa: A002
    """Free text."""
    return Argument(TEXT, default, help, **options)


def _int_argument(default: Any = REQUIRED, help: str = "", **options: Any) -> Any:  # noqa: A002
    """A whole number."""
    return Argument(INTEGER, default, help, **options)


def _float_argument(default: Any = REQUIRED, help: str = "", **options: Any) -> Any:  # noqa: A002
    """A number."""
    return Argument(NUMBER, default, help, **options)


def _bool_argument(default: Any = False, help: str = "", **options: Any) -> Any:  # noqa: A002
    """Yes or no: ``1 yes on true`` / ``0 no off false``."""
    return Argument(BOOLEAN, default, help, **options)


def _flag_argument(help: str = "", **options: Any) -> Any:  # noqa: A002
    """True when the word is present (``relay only``), False otherwise."""
    return Argument(BOOLEAN, False, help, flag=True, **options)


def _duration_argument(default: Any = REQUIRED, help: str = "", **options: Any) -> Any:  # noqa: A002
    """Seconds: ``30``, ``90s``, ``5m``, ``2h``, ``1d``."""
    return Argument(DURATION, default, help, **options)


def _path_argument(default: Any = REQUIRED, help: str = "", *, workdir: bool = False,  # noqa: A002
                   **options: Any) -> Any:
    """A file or directory; relative paths are taken in the config directory (``workdir``: see above)."""
    return Argument(WORKDIR_PATH if workdir else PATH, default, help, **options)


def _list_argument(default: Any = REQUIRED, help: str = "", **options: Any) -> Any:  # noqa: A002
    """Words separated by commas or spaces (``hooks rcpt,data``)."""
    return Argument(WORDS, default, help, **options)


def _choice_argument(choices: Sequence[str], default: Any = REQUIRED, help: str = "",  # noqa: A002
                     **options: Any) -> Any:
    """One of ``choices`` (compared lower-cased)."""
    return Argument(TEXT, default, help, choices=[c.lower() for c in choices], **options)


def _octal_argument(default: Any = REQUIRED, help: str = "", **options: Any) -> Any:  # noqa: A002
    """A file mode such as ``0640``."""
    return Argument(OCTAL, default, help, **options)


def _level_argument(default: Any = None, help: str = "", **options: Any) -> Any:  # noqa: A002
    """A log level: ``6``, ``LOGINFO``, or ``+1``/``-1`` relative to the configured one."""
    return Argument(LEVEL, default, help, **options)


class arg:  # noqa: N801 - a namespace, read as ``arg.duration(...)``
    """Declare a plugin argument: ``wait = arg.duration(1, "seconds to wait")``.

    Each takes ``(default, help, **options)``; leave ``default`` out for a
    required argument. Options: ``positional``, ``repeat``, ``aliases``,
    ``choices`` (see :class:`Argument`); ``arg.path`` also takes ``workdir``.
    """

    str = staticmethod(_text_argument)
    int = staticmethod(_int_argument)
    float = staticmethod(_float_argument)
    bool = staticmethod(_bool_argument)
    flag = staticmethod(_flag_argument)
    duration = staticmethod(_duration_argument)
    path = staticmethod(_path_argument)
    list = staticmethod(_list_argument)
    choice = staticmethod(_choice_argument)
    octal = staticmethod(_octal_argument)
    level = staticmethod(_level_argument)
