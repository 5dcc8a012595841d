"""http_config against a real HTTP server (twisted.web) on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server

from qptwisted import ConfigError, Engine
from qptwisted.testing import make_engine

from .queue_support import free_port


class Files(resource.Resource):
    """Serves ``files[name]`` (a status and a body); ``hang`` names are never answered."""

    isLeaf = True

    def __init__(self, files: dict[str, tuple[int, bytes]]) -> None:
        super().__init__()
        self.files = files
        self.hang: set[str] = set()
        self.held: list[Any] = []
        self.asked: list[str] = []

    def render_GET(self, request: Any) -> Any:
        name = request.path.decode().split("/", 2)[2]
        self.asked.append(name)
        if name in self.hang:
            self.held.append(request)
            return server.NOT_DONE_YET
        status, body = self.files.get(name, (404, b"not here"))
        request.setResponseCode(status)
        return body


class HTTPConfigTests(unittest.TestCase):
    def setUp(self) -> None:
        self.first = Files({"rcpthosts": (200, b"# fleet\nexample.com\n\nexample.net\n"),
                            "me": (200, b"mx.fleet.test\n"), "broken": (500, b"oops")})
        self.second = Files({"relayclients": (200, b"192.0.2.0/24\n"), "me": (200, b"never.test\n")})
        self.urls = []
        for files in (self.first, self.second):
            port = reactor.listenTCP(0, server.Site(files), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.urls.append(f"http://127.0.0.1:{port.getHost().port}/config/")
        self.cache = Path(self.mktemp()).resolve() / "cache.json"

    def tearDown(self) -> None:
        for files in (self.first, self.second):
            for request in files.held:
                if not request._disconnected:
                    request.finish()

    def engine(self, extra: str = "", urls: list[str] | None = None,
               config: dict[str, Any] | None = None) -> Engine:
        line = f"http_config {' '.join(urls or self.urls)} cache_file {self.cache} {extra}"
        engine = make_engine([line], config=config or {"rcpthosts": "file.test"}, clock=reactor)
        self.addCleanup(engine.close)
        return engine

    @defer.inlineCallbacks
    def test_names_are_fetched_at_start(self) -> Any:
        engine = self.engine("names rcpthosts,relayclients,me")
        yield engine.plugin("http_config").ready  # type: ignore[attr-defined]
        self.assertEqual(engine.config_list("rcpthosts"), ["example.com", "example.net"])
        self.assertEqual(engine.config_list("relayclients"), ["192.0.2.0/24"])  # from the second prefix
        self.assertEqual(engine.config_list("me"), ["mx.fleet.test"])  # the first prefix wins

    @defer.inlineCallbacks
    def test_cache_miss_answers_from_the_file_then_from_http(self) -> Any:
        engine = self.engine()
        plugin: Any = engine.plugin("http_config")
        yield plugin.ready
        self.assertEqual(engine.config_list("rcpthosts"), ["file.test"])
        yield plugin.fetching.get("rcpthosts") or defer.succeed(None)
        self.assertEqual(engine.config_list("rcpthosts"), ["example.com", "example.net"])
        # a name no prefix serves stays with the file, and is asked for only once
        self.assertEqual(engine.config_list("badrcptto"), [])
        yield plugin.fetching.get("badrcptto") or defer.succeed(None)
        self.assertEqual(engine.config_list("badrcptto"), [])
        self.assertEqual(self.first.asked.count("badrcptto"), 1)

    @defer.inlineCallbacks
    def test_refresh_picks_up_changes_and_keeps_stale_values_on_errors(self) -> Any:
        engine = self.engine("names rcpthosts")
        plugin: Any = engine.plugin("http_config")
        yield plugin.ready
        self.first.files["rcpthosts"] = (200, b"changed.test\n")
        yield plugin.refresh_all()
        self.assertEqual(engine.config_list("rcpthosts"), ["changed.test"])
        self.first.files["rcpthosts"] = (503, b"down")
        yield plugin.refresh_all()
        self.assertEqual(engine.config_list("rcpthosts"), ["changed.test"])

    @defer.inlineCallbacks
    def test_timeout_keeps_the_file(self) -> Any:
        self.first.hang.add("rcpthosts")
        engine = self.engine("names rcpthosts timeout 0.2")
        yield engine.plugin("http_config").ready  # type: ignore[attr-defined]
        self.assertEqual(engine.config_list("rcpthosts"), ["file.test"])

    @defer.inlineCallbacks
    def test_cache_file_survives_a_restart_with_the_server_down(self) -> Any:
        engine = self.engine("names rcpthosts")
        yield engine.plugin("http_config").ready  # type: ignore[attr-defined]
        self.assertEqual(json.loads(self.cache.read_text())["rcpthosts"], ["example.com", "example.net"])
        yield engine.close()
        down = f"http://127.0.0.1:{free_port()}/config/"
        engine = self.engine("names rcpthosts", urls=[down])
        self.assertEqual(engine.config_list("rcpthosts"), ["example.com", "example.net"])
        yield engine.plugin("http_config").ready  # type: ignore[attr-defined]
        self.assertEqual(engine.config_list("rcpthosts"), ["example.com", "example.net"])

    @defer.inlineCallbacks
    def test_error_status_is_not_absence(self) -> Any:
        engine = self.engine("names broken", config={"broken": "from-file"})
        yield engine.plugin("http_config").ready  # type: ignore[attr-defined]
        self.assertEqual(engine.config_list("broken"), ["from-file"])
        self.assertNotIn("broken", engine.plugin("http_config").cache)  # type: ignore[attr-defined]

    def test_needs_a_url(self) -> None:
        with self.assertRaises(ConfigError):
            make_engine(["http_config"])
