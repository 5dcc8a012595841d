"""qpsmtpd-style configuration: a directory of small files, one value per line."""

from __future__ import annotations

import os
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


def default_config_dir() -> str:
    """``./config`` if it exists, else the sample configuration shipped with qptwisted."""
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
    """

    def __init__(self, directory: str) -> None:
        # absolute: twistd may change directory when it daemonizes, and relative names in the
        # configuration are taken in the config directory, wherever the server runs
        self.directory = Path(directory).absolute()
        #: the directory the server was started in, where relative data paths point (see :meth:`resolve`)
        self.workdir = Path.cwd()
        self._cache: dict[str, list[str]] = {}

    def path(self, name: str) -> Path:
        """Where the file ``name`` lives."""
        return self.directory / name

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
                included = Path(target) if os.path.isabs(target) else self.directory / target
                values.extend(self._read(included, seen))
            else:
                values.append(line)
        return values
