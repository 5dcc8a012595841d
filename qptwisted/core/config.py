"""qpsmtpd-style configuration: a directory of small files, one value per line."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
_PACKAGE_CONFIG = _PACKAGE / "default_config"
_CHECKOUT_CONFIG = _PACKAGE.parent / "config"


class ConfigError(Exception):
    """A configuration that cannot be used; the message says which file and why."""


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
        self.directory = Path(directory)
        self._cache: dict[str, list[str]] = {}

    def path(self, name: str) -> Path:
        """Where the file ``name`` lives."""
        return self.directory / name

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
