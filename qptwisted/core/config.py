"""qpsmtpd-style configuration: a directory of small files, one value per line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from qptwisted.core.codes import parse_level

_PACKAGE = Path(__file__).resolve().parent.parent
_PACKAGE_CONFIG = _PACKAGE / "default_config"
_CHECKOUT_CONFIG = _PACKAGE.parent / "config"


class ConfigError(Exception):
    """A configuration that cannot be used; the message says which file and why."""


_TRUE = frozenset({"1", "yes", "on", "true"})
_FALSE = frozenset({"0", "no", "off", "false", ""})


def parse_bool(text: str) -> bool:
    """The one reading of a yes/no value: ``1 yes on true`` and ``0 no off false`` (any case).

    Anything else raises ``ValueError``: a typo must not silently mean "off".
    """
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a yes/no value (use 1/0, yes/no, on/off, true/false)")


#: the file that turns on the per-file fallback (see :class:`Config`)
FALLBACK_FILE = "config_fallback"


def qmail_control_dir() -> Path:
    """qmail's control directory: ``$QMAIL/control``, by default ``/var/qmail/control``."""
    return Path(os.environ.get("QMAIL") or "/var/qmail") / "control"


def default_config_dir() -> str:
    """``$QPSMTPD_CONFIG`` (qpsmtpd's variable), else ``./config``, else the sample shipped with qptwisted."""
    from_env = os.environ.get("QPSMTPD_CONFIG")
    if from_env:
        return from_env
    for candidate in (Path("config"), _PACKAGE_CONFIG, _CHECKOUT_CONFIG):
        if (candidate / "plugins").is_file():
            return str(candidate)
    raise ConfigError("no config directory: pass --config DIR")


class Config:
    """Reads config files from ``directory``, qpsmtpd's syntax.

    One value per line; surrounding white space trimmed; empty lines and lines
    starting with ``#`` skipped; ``$include NAME`` pulls in another file, or
    every file of a directory in sorted order. Files are read once and cached
    until the engine is rebuilt (SIGHUP).

    The per-file fallback of qpsmtpd, off unless asked for: the directories
    listed in ``config/config_fallback`` (or passed as ``fallback``) are
    searched, in order, for each file the config directory does not have, so
    ``me``, ``rcpthosts`` and friends can stay in qmail's control directory. A
    line ``qmail`` there means ``$QMAIL/control`` (``/var/qmail/control``);
    ``$VARIABLES`` are expanded (``$QPSMTPD_CONFIG``); relative paths are taken
    in the config directory.
    """

    def __init__(self, directory: str, fallback: Sequence[str | os.PathLike[str]] | None = None) -> None:
        # absolute: twistd may change directory when it daemonizes, and relative names in the
        # configuration are taken in the config directory, wherever the server runs
        self.directory = Path(directory).absolute()
        #: the directory the server was started in, where relative data paths point (see :meth:`resolve`)
        self.workdir = Path.cwd()
        self._cache: dict[str, list[str]] = {}
        self._fallback = None if fallback is None else [self._fallback_dir(str(entry)) for entry in fallback]

    def path(self, name: str) -> Path:
        """Where file ``name`` lives: the config directory, else the first fallback directory that has it."""
        own = self.directory / name
        if name == FALLBACK_FILE or own.exists():
            return own
        for directory in self.fallback_dirs():
            if (directory / name).exists():
                return directory / name
        return own

    def fallback_dirs(self) -> list[Path]:
        """The directories searched for a file the config directory lacks (none unless asked for)."""
        if self._fallback is None:
            self._fallback = [self._fallback_dir(entry)
                              for entry in self._read(self.directory / FALLBACK_FILE, set())]
        return self._fallback

    def _fallback_dir(self, entry: str) -> Path:
        if entry == "qmail":
            return qmail_control_dir()
        return self.resolve(os.path.expandvars(entry))

    def resolve(self, name: str | os.PathLike[str], workdir: bool = False) -> Path:
        """A path named in the configuration: relative paths are taken in the config directory.

        ``workdir`` takes them in :attr:`workdir` instead, for data that lives
        beside the configuration (Maildirs, log files, stores), as it did in
        qpsmtpd; the result is absolute, so it stays put whatever the process
        does with its current directory later.
        """
        path = Path(name).expanduser()
        if path.is_absolute():
            return path
        return (self.workdir if workdir else self.directory) / path

    def plugin_dirs(self) -> list[Path]:
        """The directories of ``config/plugin_dirs``, in order; a missing one is an error."""
        found = []
        for entry in self.get_list("plugin_dirs"):
            path = self.resolve(entry)
            if not path.is_dir():
                raise ConfigError(f"config file {self.path('plugin_dirs')}: {entry!r}: no such directory "
                                  f"({path})")
            found.append(path)
        return found

    def get_list(self, name: str) -> list[str]:
        """Every value of ``name`` (an empty list if the file does not exist)."""
        values = self._cache.get(name)
        if values is None:
            values = self._cache[name] = self._read(self.path(name), set())
        return values

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        values = self.get_list(name)
        return values[0] if values else default

    def get_int(self, name: str, default: int) -> int:
        """The first value of ``name`` as an integer; a clear error if it is not one."""
        value = self.get(name)
        if value is None:
            return default
        try:
            return int(value.split()[0])
        except ValueError:
            raise ConfigError(f"config file {self.path(name)}: {value!r} is not a number") from None

    def get_float(self, name: str, default: float) -> float:
        """The first value of ``name`` as a number (fractions allowed)."""
        value = self.get(name)
        if value is None:
            return default
        try:
            return float(value.split()[0])
        except ValueError:
            raise ConfigError(f"config file {self.path(name)}: {value!r} is not a number") from None

    def get_level(self, name: str, default: int) -> int:
        """The first value of ``name`` as a log level (``6``, ``LOGINFO``, ``+1``)."""
        value = self.get(name)
        if value is None:
            return default
        try:
            return parse_level(value.split()[0], default)
        except ValueError as err:
            raise ConfigError(f"config file {self.path(name)}: {err}") from None

    def get_bool(self, name: str, default: bool) -> bool:
        """The first value of ``name`` as yes/no (see :func:`parse_bool`)."""
        value = self.get(name)
        if value is None:
            return default
        try:
            return parse_bool(value.split()[0] if value.split() else value)
        except ValueError as err:
            raise ConfigError(f"config file {self.path(name)}: {err}") from None

    def _read(self, path: Path, seen: set[Path]) -> list[str]:
        if path in seen:
            raise ConfigError(f"config file {path}: circular $include")
        seen = seen | {path}
        try:
            if path.is_dir():
                return [value for child in sorted(path.iterdir())
                        if child.is_file() and not child.name.startswith(".")
                        for value in self._read(child, seen)]
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path}: {err}") from err
        values: list[str] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("$include"):
                target = line[len("$include"):].strip()
                included = Path(target) if os.path.isabs(target) else self.path(target)
                values.extend(self._read(included, seen))
            else:
                values.append(line)
        return values
