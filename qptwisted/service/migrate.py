"""``qpsmtpd migrate DIR``: what a qpsmtpd config directory does when qptwisted loads it.

Reads ``DIR/logging`` and ``DIR/plugins`` the way the engine does and says,
one plugin line at a time:

``ok``
    loads as it is;
``alias``
    loads through qpsmtpd's old name, with the new spelling to write;
``changed``
    loads, but arguments were rewritten or dropped, or the plugin behaves
    differently in a way worth knowing (each change on its own line);
``error``
    the plugin is there but refuses the line (the reason);
``port``
    no such plugin: a Perl plugin to rewrite in Python (a qpsmtpd plugin
    qptwisted does not ship, or a site's own).

Then the config files that changed meaning, and a summary. Nothing is
loaded for real: no plugin's ``register`` runs, nothing connects anywhere.
The exit status is 0 when every line loads (directly or through an alias),
1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from twisted.internet.task import Clock

from qptwisted.core.config import FALLBACK_FILE, Config, ConfigError, qmail_control_dir
from qptwisted.core.engine import Engine
from qptwisted.core.loader import PluginIndex, PluginLine, parse_plugin_line

#: where a plugin author starts (in qptwisted's source tree)
WRITING_PLUGINS = "docs/writing-plugins.md"
COMPATIBILITY = "docs/compatibility.md"

#: qpsmtpd's plugins (0.94 and master), to tell "qpsmtpd has it, qptwisted does not" from a site's own
QPSMTPD_PLUGINS = frozenset("""
auth/auth_checkpassword auth/auth_cvm_unix_local auth/auth_flat_file auth/auth_imap auth/auth_ldap_bind
auth/auth_vpopmail auth/auth_vpopmail_sql auth/auth_vpopmaild auth/authdeny badmailfrom badmailfromto
badrcptto bogus_bounce connection_time content_log count_unrecognized_commands dkim dmarc
dns_whitelist_soft dnsbl domainkeys dont_require_anglebrackets dspam earlytalker fcrdns greylisting
headers helo help hosts_allow http_config ident/geoip ident/p0f karma loadcheck logging/adaptive
logging/apache logging/connection_id logging/devnull logging/file logging/syslog logging/transaction_id
logging/warn loop milter naughty noop_counter parse_addr_withhelo qmail_deliverable queue/exim-bsmtp
queue/maildir queue/postfix-queue queue/qmail-queue queue/smtp-forward quit_fortune random_error rcpt_map
rcpt_ok rcpt_regexp relay resolvable_fromhost rhsbl sender_permitted_from spamassassin stunnel tls
uribl user_config virus/aveclient virus/bitdefender virus/clamav virus/clamdscan virus/hbedv
virus/kavscanner virus/klez_filter virus/sophie virus/uvscan whitelist check_qmail_deliverable
async/dnsbl async/rhsbl async/uribl async/earlytalker async/resolvable_fromhost
async/dns_whitelist_soft async/queue/smtp-forward
""".split())

#: config files qpsmtpd read that mean something else here (or nothing), and what to do
CHANGED_FILES = {
    "badmailfrom_patterns": "not read (check_badmailfrom_patterns was merged into badmailfrom): "
                            "move its patterns into config/badmailfrom",
    "badrcptto_patterns": "not read (check_badrcptto_patterns was merged into badrcptto): "
                          "move its patterns into config/badrcptto",
    "morercpthosts.cdb": "not read (no CDB): list the domains in config/morercpthosts, one per line",
    "plugin_dirs": "its directories are searched for NAME.py files: Perl plugins there are not loaded",
}

#: files a qpsmtpd setup often keeps in qmail's control directory
QMAIL_FILES = ("me", "rcpthosts", "morercpthosts", "badmailfrom", "databytes", "smtpgreeting",
               "timeoutsmtpd")


@dataclass
class Finding:
    """What one plugin line does: its verdict, the line, the new spelling, and the details."""

    verdict: str
    where: str
    line: str
    spelling: str = ""
    details: list[str] = field(default_factory=list)

    def render(self) -> Iterator[str]:
        """The finding as report lines."""
        arrow = f"  ->  {self.spelling}" if self.spelling and self.spelling != self.line else ""
        yield f"{self.where:<12} {self.verdict:<8} {self.line}{arrow}"
        for detail in self.details:
            yield f"{'':<21} - {detail}"


class Migration:
    """The report on one config directory."""

    def __init__(self, directory: str) -> None:
        self.config = Config(directory)
        self.notes: list[str] = []
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        try:
            self.engine = Engine(self.config, Clock())
        except ConfigError as err:
            # the server would not start; the plugin lines are still checked, on default settings
            self.notes.append(f"settings: {err}")
            self._scratch = tempfile.TemporaryDirectory(prefix="qpsmtpd-migrate-")
            self.engine = Engine(Config(self._scratch.name), Clock())
        self.index = PluginIndex(self._plugin_dirs())

    def close(self) -> None:
        """Release the engine the checks used."""
        self.engine.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    def _plugin_dirs(self) -> list[Path]:
        found = []
        for entry in self.config.get_list("plugin_dirs"):
            path = self.config.resolve(entry)
            if path.is_dir():
                found.append(path)
            else:
                self.notes.append(f"plugin_dirs: {entry!r} does not exist ({path}); not searched")
        return found

    def findings(self) -> list[Finding]:
        """One finding per line of ``logging`` and ``plugins``."""
        out = []
        for source in ("logging", "plugins"):
            for number, text in enumerate(self.config.get_list(source), 1):
                out.append(self.check(f"{source} {number}", text))
        return out

    def check(self, where: str, text: str) -> Finding:
        """What the engine would do with one plugin line."""
        try:
            line = parse_plugin_line(text)
        except (ConfigError, ValueError) as err:
            return Finding("error", where, text, details=[str(err)])
        try:
            resolved = self.index.resolve(line)
        except ConfigError:
            return Finding("port", where, text, details=[self.missing(line)])
        finding = Finding("ok", where, text)
        alias = resolved.alias
        if alias is not None and resolved.translated:
            finding.verdict = "alias"
            finding.spelling = resolved.line.text()
            finding.details.append(f"{alias.old}: {alias.origin}")
        if resolved.changes or (alias is not None and alias.note):
            finding.verdict = "changed"
            finding.details += list(resolved.changes)
            if alias is not None and alias.note:
                finding.details.append(alias.note)
        try:
            resolved.factory(self.engine, resolved.line.args, resolved.line.instance).configure()
        except ConfigError as err:
            finding.verdict = "error"
            finding.details.append(str(err))
        except Exception as err:  # a third-party plugin may fail in its own way
            finding.verdict = "error"
            finding.details.append(f"{type(err).__name__}: {err}")
        return finding

    def missing(self, line: PluginLine) -> str:
        """Why a plugin is not found, and what to do."""
        for directory in self.index.plugin_dirs:
            perl = directory / line.name
            if perl.is_file():
                return (f"a Perl plugin ({perl}): rewrite it in Python as {perl}.py "
                        f"(see {WRITING_PLUGINS})")
        if line.name in QPSMTPD_PLUGINS:
            return (f"one of qpsmtpd's plugins that qptwisted does not ship: port it to Python "
                    f"into a plugin_dirs directory (see {WRITING_PLUGINS}), or leave it out")
        return (f"not a qpsmtpd plugin (third-party or the site's own): port it to Python into a "
                f"plugin_dirs directory (see {WRITING_PLUGINS})")

    def files(self) -> list[str]:
        """Config files whose meaning changed, and files qpsmtpd would have found in qmail's control dir."""
        out = []
        for name, what in CHANGED_FILES.items():
            if (self.config.directory / name).exists():
                out.append(f"config/{name}: {what}")
        control = qmail_control_dir()
        if not (self.config.directory / FALLBACK_FILE).exists():
            lacking = [name for name in QMAIL_FILES
                       if not (self.config.directory / name).exists() and (control / name).exists()]
            if lacking:
                out.append(f"{', '.join(lacking)}: not in this directory but in {control}, where qpsmtpd "
                           f"found them; write 'qmail' into config/{FALLBACK_FILE} to read them there")
        return out

    def report(self, out: TextIO) -> int:
        """Print the report; 0 when every line loads, 1 otherwise."""
        findings = self.findings()
        print(f"qpsmtpd migrate: {self.config.directory}", file=out)
        for finding in findings:
            for text in finding.render():
                print(text, file=out)
        for note in self.notes + self.files():
            print(f"note: {note}", file=out)
        counts = {verdict: sum(1 for f in findings if f.verdict == verdict)
                  for verdict in ("ok", "alias", "changed", "error", "port")}
        print(f"{counts['ok']} load as they are, {counts['alias']} through an alias, {counts['changed']} "
              f"with changed arguments or behaviour, {counts['error']} refused, {counts['port']} to port",
              file=out)
        if counts["port"]:
            print(f"Porting a plugin: {WRITING_PLUGINS} (the plugin API, hooks and test kit); old names and "
                  f"their new spelling: {COMPATIBILITY}", file=out)
        return 1 if counts["error"] or counts["port"] else 0


def migrate(argv: Sequence[str]) -> int:
    """``qpsmtpd migrate DIR``: report what a qpsmtpd config directory does in qptwisted."""
    parser = argparse.ArgumentParser(prog="qpsmtpd migrate",
                                     description="Say, line by line, how a qpsmtpd config directory loads: "
                                                 "as is, through an alias, with changed arguments, or "
                                                 "which plugins need porting.")
    parser.add_argument("directory", help="the qpsmtpd config directory (the one with plugins in it)")
    options = parser.parse_args(list(argv))
    if not (Path(options.directory) / "plugins").is_file():
        print(f"qpsmtpd migrate: {options.directory}/plugins does not exist", file=sys.stderr)
        return 2
    migration = Migration(options.directory)
    try:
        return migration.report(sys.stdout)
    finally:
        migration.close()


__all__ = ["Finding", "Migration", "migrate"]
