"""The engine's lifecycle: close() reaches every plugin, timers stop, a retired engine closes after its
last connection, the service owns the thread pool and closes its engine when it stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import ConfigError, Engine, Plugin, QPSMTPDService
from qptwisted.testing import SMTPDialogue, make_engine, write_config


class Holder(Plugin):
    """Holds a resource and a periodic task; records when it is closed."""

    name = "test_holder"
    closed: list[str] = []

    def register(self, *args: str) -> None:
        self.ticks = 0
        self.engine.call_every(10, self.tick)

    def tick(self) -> None:
        self.ticks += 1

    def close(self) -> Deferred[None] | None:
        type(self).closed.append(self.plugin_name)
        return None


class SlowClose(Plugin):
    name = "test_slow_close"
    pending: Deferred[None]

    def close(self) -> Deferred[None]:
        type(self).pending = Deferred()
        return type(self).pending


class BrokenClose(Plugin):
    name = "test_broken_close"

    def close(self) -> None:
        raise RuntimeError("cannot close")


class EngineTests(unittest.TestCase):
    def setUp(self) -> None:
        Holder.closed = []

    def test_close_reaches_every_plugin_last_first_and_stops_timers(self) -> None:
        clock = Clock()
        engine = make_engine([Holder, BrokenClose, SlowClose], clock=clock)
        holder: Any = engine.plugins[0]
        clock.pump([10, 10, 5])
        self.assertEqual(holder.ticks, 2)
        done = engine.close()
        self.assertNoResult(done)  # SlowClose has not finished
        SlowClose.pending.callback(None)
        self.successResultOf(done)
        self.assertEqual(Holder.closed, ["test_holder"])
        self.flushLoggedErrors(RuntimeError)
        clock.advance(100)
        self.assertEqual(holder.ticks, 2)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(engine.closed)
        self.assertIs(engine.close().result, None)  # idempotent

    def test_on_close_runs_after_the_plugins_and_a_failure_stops_nothing(self) -> None:
        engine = make_engine([Holder])
        order: list[str] = []
        finishing: Deferred[None] = Deferred()

        def broken() -> None:
            raise OSError("cannot stop")

        engine.on_close(lambda: (order.append(f"closer after {Holder.closed}"), finishing)[1])
        engine.on_close(broken)
        engine.on_close(lambda: order.append("second closer"))
        done = engine.close()
        self.assertEqual(order, ["closer after ['test_holder']", "second closer"])
        self.assertNoResult(done)  # waits for what a closer returned
        finishing.callback(None)
        self.successResultOf(done)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_retired_engine_closes_after_its_last_connection(self) -> None:
        engine = make_engine([Holder, "rcpt_ok"])
        first, second = SMTPDialogue(engine), SMTPDialogue(engine)
        self.assertEqual(engine.connections, 2)
        retired = engine.retire()
        first.close()
        self.assertNoResult(retired)
        self.assertEqual(Holder.closed, [])
        second.close()
        self.successResultOf(retired)
        self.assertEqual(Holder.closed, ["test_holder"])

    def test_an_idle_engine_closes_at_once_when_retired(self) -> None:
        engine = make_engine([Holder])
        self.successResultOf(engine.retire())
        self.assertEqual(Holder.closed, ["test_holder"])

    def test_a_failed_load_closes_what_was_loaded(self) -> None:
        directory = Path(self.mktemp()).absolute()
        (directory / "plugins.d").mkdir(parents=True)
        (directory / "plugins.d" / "test_holder.py").write_text("from tests.test_lifecycle import Holder\n")
        write_config(directory, {"plugin_dirs": "plugins.d", "plugins": ["test_holder", "no_such_plugin_x"]})
        with self.assertRaises(ConfigError):
            Engine.from_config(str(directory), Clock())
        self.assertEqual(Holder.closed, ["test_holder"])


class LogLevelTests(unittest.TestCase):
    def test_logs_says_whether_a_line_would_be_written(self) -> None:
        from qptwisted.core.codes import LOGDEBUG, LOGINFO, LOGWARN

        quiet = make_engine([], config={"loglevel": "4"})
        self.assertEqual((quiet.logs(LOGWARN), quiet.logs(LOGINFO)), (True, False))
        plugin_logged = make_engine(["logging/warn"], config={"loglevel": "4"})  # a logging plugin takes all
        self.assertTrue(plugin_logged.logs(LOGDEBUG))

    def test_queued_line_only_formatted_when_logged(self) -> None:
        from qptwisted.core.codes import LOGINFO

        lines: list[tuple[int, str]] = []
        for level in ("4", "6"):
            engine = make_engine(["rcpt_ok", "queue/discard"],
                                 config={"loglevel": level, "rcpthosts": ["example.org"]})
            self.patch(engine, "log", lambda lvl, message, **_: lines.append((lvl, message)))
            smtp = SMTPDialogue(engine)
            smtp.send("HELO client.example")
            smtp.send("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>", "DATA")
            self.assertEqual(smtp.send_raw(b"Subject: x\r\n\r\nhi\r\n.\r\n")[-1].code, 250)
        queued = [message for lvl, message in lines if message.startswith("queued message")]
        self.assertEqual(queued, ["queued message from <a@example.com> for 1 recipients by queue/discard"])
        self.assertIn((LOGINFO, queued[0]), lines)


class ServiceTests(unittest.TestCase):
    def setUp(self) -> None:
        Holder.closed = []

    def service(self) -> QPSMTPDService:
        directory = self.mktemp()
        write_config(directory, {"me": "mx.test", "plugins": ["rcpt_ok"], "spool_dir": f"{directory}/spool"})
        service = QPSMTPDService(directory, plugin_lines=["rcpt_ok"], resources={"answer": 42})
        service.engine.add_plugin(Holder(service.engine))
        return service

    def test_the_service_owns_the_thread_pool_and_closes_its_engine(self) -> None:
        service = self.service()
        self.assertFalse(service.threadpool.started)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.assertTrue(service.threadpool.started)
        self.assertEqual(service.engine.resources, {"answer": 42})
        old = service.engine
        self.assertTrue(service.reload())
        self.assertTrue(old.closed)  # no connection was open: closed at once
        self.assertEqual(Holder.closed, ["test_holder"])
        self.assertIs(service.engine._threadpool, service.threadpool)  # the reload kept the pool
        stopped = service.stopService()
        self.successResultOf(stopped)
        self.assertTrue(service.engine.closed)
        self.assertFalse(service.threadpool.started)

    def test_a_failed_reload_keeps_the_running_engine(self) -> None:
        service = self.service()
        engine = service.engine
        self.addCleanup(engine.close)
        service.plugin_lines = ["no_such_plugin_y"]
        self.assertFalse(service.reload())
        self.assertIs(service.engine, engine)
        self.assertFalse(engine.closed)
        self.flushLoggedErrors()
