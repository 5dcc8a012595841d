"""http_config: config files served over HTTP, so a fleet of servers shares one configuration.

qpsmtpd's ``http_config``, with a cache. For a config file ``NAME`` the
plugin GETs ``PREFIX`` + ``NAME`` from each URL prefix in turn; the first
``200`` answer wins and its body, one value a line (empty lines and ``#``
comments dropped, as in config files), becomes the file's values. A ``404``
from every prefix means "not served here": the file in ``config/`` is used.

The ``config`` hook must answer at once, so it never waits for HTTP: it
answers from a cache that is filled in the background.

- At start and every ``refresh`` seconds every known name is fetched anew
  (the names of the ``names`` argument, and every name asked for since).
- **A cache miss** (a name not fetched yet) answers from the file in
  ``config/`` (or the default), and fetches the name in the background, so
  the next question gets the HTTP value. Plugins that read a file only
  once, at start, therefore see the file unless the name is in ``names``
  and the cache file (below) holds it from the last run.
- **An HTTP server that fails or times out** (``timeout``) leaves the last
  good values in place (a stale value beats none); the failure is logged.
- The cache is written to ``cache_file`` after every refresh and read at
  start, so a restart while the HTTP server is down still has the fleet's
  values.
- A served file with no values cannot empty a file in ``config/``: an
  empty answer falls back to the file, as qpsmtpd does.

The original fetches on every question, synchronously, with no cache;
qptwisted never blocks the reactor for it.

Arguments:

``URL ...``
    the URL prefixes, in order (``NAME`` is appended, URL-quoted).
``names N,N``
    names to fetch at start (default: none; learn them as they are asked).
``refresh N``
    seconds between refreshes (default 300).
``timeout N``
    seconds one GET may take (default 5).
``cache_file PATH``
    where the cache is kept between runs (default
    ``<spool_dir>/http_config.json``; relative: in the directory the
    server was started in).

config/plugins (list it first, so the other plugins' questions reach it)::

    http_config http://config.example.org/smtp/ names rcpthosts,relayclients,badmailfrom refresh 60
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, DeferredList, succeed

from qptwisted import DECLINED, LOGDEBUG, LOGINFO, LOGWARN, OK, HookAnswer, Plugin, arg

#: a name no prefix serves
ABSENT: list[str] = []


class _Failed(Exception):
    """Every prefix failed or did not answer (nothing was learnt)."""


def parse_values(body: bytes) -> list[str]:
    """The values of a served config file: one a line, no empty lines or ``#`` comments."""
    lines = (line.strip() for line in body.decode("utf-8", "replace").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class HTTPConfig(Plugin):
    """The ``config`` hook answered from HTTP, through a background-filled cache."""

    name = "http_config"
    #: the reactor treq uses (tests may replace it); timeouts run on the engine clock
    reactor: Any = None

    urls: list[str] = arg.str(help="URL prefixes; NAME is appended", positional=True, repeat=True)
    names: list[str] = arg.list([], "config names to fetch at start")
    refresh: float = arg.duration(300, "seconds between refreshes")
    request_timeout: float = arg.duration(5, "seconds one GET may take", aliases=("timeout",))
    cache_file: Path | None = arg.path(None, "where the cache is kept between runs (default: "
                                       "<spool_dir>/http_config.json)", workdir=True)

    def register(self, *args: str) -> None:
        """Load the cache file, start the refreshes."""
        if not self.urls:
            from qptwisted import ArgumentError

            raise ArgumentError(f"plugin {self.plugin_name}: at least one URL prefix is required")
        self.path = self.cache_file or Path(self.engine.settings.spool_dir) / "http_config.json"
        self.cache: dict[str, list[str]] = self._load()
        self.known: set[str] = set(self.names) | set(self.cache)
        self.fetching: dict[str, Deferred[None]] = {}
        self.ready: Deferred[None] = Deferred()
        self.engine.call_every(self.refresh, self._refresh_first, now=True)

    def _load(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            self.log(LOGWARN, f"ignoring cache file {self.path}: {err}")
            return {}
        return {str(name): [str(v) for v in values] for name, values in data.items()
                if isinstance(values, list)}

    def _refresh_first(self) -> Deferred[None]:
        d = self.refresh_all()
        if not self.ready.called:
            d.addBoth(self._first_done)
        return d

    def _first_done(self, result: Any) -> Any:
        if not self.ready.called:
            self.ready.callback(None)
        return result

    # -- the hook --------------------------------------------------------------
    def hook_config(self, transaction: None, name: str) -> HookAnswer:
        values = self.cache.get(name)
        if values is None:
            if name not in self.known:
                self.known.add(name)
                self.log(LOGDEBUG, f"cache miss for {name}: the file answers, fetching it")
                self.fetch(name)
            return DECLINED
        if not values:
            return DECLINED
        return (OK, *values)

    # -- fetching ----------------------------------------------------------------
    def refresh_all(self) -> Deferred[None]:
        """Fetch every known name again; fires when all have answered."""
        names = sorted(self.known)
        done: Deferred[Any] = DeferredList([self.fetch(name) for name in names], consumeErrors=True)
        return done.addCallback(lambda _: self._save())

    def fetch(self, name: str) -> Deferred[None]:
        """Fetch ``name`` from the prefixes into the cache (one fetch per name at a time)."""
        if name in self.fetching:
            return self.fetching[name]
        d = Deferred.fromCoroutine(self._fetch(name))

        def settled(result: Any) -> None:
            self.fetching.pop(name, None)
            if isinstance(result, Exception) or hasattr(result, "getErrorMessage"):
                why = result.getErrorMessage() if hasattr(result, "getErrorMessage") else str(result)
                self.log(LOGWARN, f"cannot fetch {name}: {why}; "
                         f"{'keeping the last values' if name in self.cache else 'the file answers'}")

        self.fetching[name] = d
        d.addBoth(settled)
        return d

    async def _fetch(self, name: str) -> None:
        import treq
        from twisted.web.client import HTTPConnectionPool

        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        errors = []
        for prefix in self.urls:
            url = prefix + quote(name, safe="/")
            pool = HTTPConnectionPool(reactor, persistent=False)
            request = treq.get(url, pool=pool, reactor=reactor)
            request.addTimeout(self.request_timeout, self.clock)
            try:
                response = await request
                body = await treq.content(response)
            except Exception as err:
                errors.append(f"{url}: {type(err).__name__}: {err}")
                continue
            if response.code == 200:
                values = parse_values(body)
                if self.cache.get(name) != values:
                    self.log(LOGINFO, f"{name}: {len(values)} values from {url}")
                self.cache[name] = values
                return
            if response.code != 404:
                errors.append(f"{url}: HTTP {response.code}")
        if errors:
            raise _Failed("; ".join(errors))
        self.cache[name] = ABSENT

    def _save(self) -> Deferred[None]:
        data = json.dumps(self.cache, indent=1, sort_keys=True)

        def write() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_text(data, encoding="utf-8")
            os.replace(temporary, self.path)

        d = self.defer_to_thread(write)
        d.addErrback(lambda failure: self.log(LOGWARN, f"cannot write {self.path}: "
                                                       f"{failure.getErrorMessage()}"))
        return d if d is not None else succeed(None)
