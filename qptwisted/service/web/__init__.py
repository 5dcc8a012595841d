"""The live web view (``--web``): a page of live sessions and recent transactions, updated live.

Resources (all served by the project, no CDN)::

    /                 the page (static/index.html)
    /static/...       its script and style sheet
    /events           server-sent events: "state" once, then "update" every tick
    /state            the same state as JSON (for scripts and curl)

The page uses the browser's ``EventSource``, which reconnects by itself and
passes through HTTP proxies (unlike the WebSocket of Haraka's ``watch``); the
state lives in this process, so no Redis is needed. A browser that does not
read its stream is paused by the transport and sent a full state once it
reads again, so a slow browser costs bounded memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from qptwisted.service.web.activity import Activity, Subscriber

STATIC = Path(__file__).resolve().parent / "static"


@implementer(IPushProducer)
class EventStream(Subscriber):
    """One browser's ``/events`` stream; the HTTP transport pauses it when the browser lags."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.paused = False
        self.finished = False

    def send(self, event: str, data: str) -> bool:
        """Write one server-sent event, unless the browser is not reading."""
        if self.paused or self.finished:
            return False
        self.request.write(f"event: {event}\ndata: {data}\n\n".encode())
        return True

    def pauseProducing(self) -> None:
        """The browser's buffer is full."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The browser reads again (it gets a full state at the next tick)."""
        self.paused = False

    def stopProducing(self) -> None:
        """The connection is going away."""
        self.finished = True


class EventsPage(resource.Resource):
    """``GET /events``: the server-sent events stream."""

    isLeaf = True

    def __init__(self, activity: Activity) -> None:
        super().__init__()
        self.activity = activity

    def render_GET(self, request: Request) -> Any:
        """Keep the request open and subscribe it."""
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx: pass events on at once
        request.write(b"retry: 2000\n\n")
        stream = EventStream(request)
        request.registerProducer(stream, True)
        unsubscribe = self.activity.subscribe(stream)

        def gone(_: object) -> None:
            stream.finished = True
            unsubscribe()

        request.notifyFinish().addBoth(gone)
        return NOT_DONE_YET


class StatePage(resource.Resource):
    """``GET /state``: what the page shows, as JSON."""

    isLeaf = True

    def __init__(self, activity: Activity) -> None:
        super().__init__()
        self.activity = activity

    def render_GET(self, request: Request) -> bytes:
        """The current state."""
        import json

        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self.activity.state(), ensure_ascii=False).encode()


class Asset(resource.Resource):
    """One of the page's own files, read once (there are three, all small)."""

    isLeaf = True
    _TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
              ".css": b"text/css; charset=utf-8"}

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.body = path.read_bytes()
        self.type = self._TYPES.get(path.suffix, b"application/octet-stream")

    def render_GET(self, request: Request) -> bytes:
        """The file, revalidated by the browser on each load (it changes with upgrades)."""
        request.setHeader(b"content-type", self.type)
        request.setHeader(b"cache-control", b"no-cache")
        return self.body


def web_resources(activity: Activity) -> dict[bytes, resource.Resource]:
    """The children of the site's root that make the web view."""
    assets = resource.Resource()
    for path in STATIC.iterdir():
        assets.putChild(path.name.encode(), Asset(path))
    return {
        b"": Asset(STATIC / "index.html"),
        b"static": assets,
        b"events": EventsPage(activity),
        b"state": StatePage(activity),
    }


__all__ = ["Activity", "Asset", "EventStream", "EventsPage", "StatePage", "web_resources", "STATIC"]
