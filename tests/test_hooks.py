"""The hook table and the runner's load-time checks: signatures, sync-only hooks, config answers."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest

from qptwisted import DECLINED, HOOKS, OK, ConfigError, HookResult, Plugin, Transaction
from qptwisted.core.hooks import HookError, is_fault
from qptwisted.testing import make_engine


class Logs(Plugin):
    name = "test_hook_logs"

    def register(self, *args: str) -> None:
        self.lines: list[tuple[int, str | None, str | None, str]] = []

    def hook_logging(self, transaction: Any, level: int, hook: str | None, plugin: str | None,
                     message: str) -> None:
        self.lines.append((level, hook, plugin, message))


class TableTests(unittest.TestCase):
    def test_every_hook_has_one_spec(self) -> None:
        self.assertEqual(len(HOOKS), len(set(HOOKS)))
        for name, spec in HOOKS.items():
            self.assertEqual(spec.name, name)
            self.assertTrue(spec.doc, name)
            self.assertTrue(spec.signature().startswith(f"hook_{name}(self, transaction"), name)

    def test_facts_of_a_few_hooks(self) -> None:
        self.assertTrue(HOOKS["config"].sync and not HOOKS["config"].observed)
        self.assertTrue(HOOKS["mail_parse"].sync)
        self.assertFalse(HOOKS["rcpt"].sync)
        self.assertTrue(HOOKS["rcpt"].params)
        self.assertEqual(HOOKS["rcpt"].declined[:2], (450, "4.7.1"))  # type: ignore[index]
        self.assertEqual(HOOKS["queue"].declined[:2], (451, "4.3.0"))  # type: ignore[index]
        self.assertFalse(HOOKS["queue"].closing)  # qpsmtpd: DENY_DISCONNECT at queue does not close
        self.assertTrue(set(HOOKS["connect"].replies) <= HOOKS["connect"].closing)
        self.assertEqual(HOOKS["rcpt"].signature(), "hook_rcpt(self, transaction, rcpt, **params)")


class SignatureTests(unittest.TestCase):
    def test_rcpt_hook_without_params_is_refused_at_load(self) -> None:
        class NoParams(Plugin):
            name = "test_no_params"

            def hook_rcpt(self, transaction: Transaction, rcpt: Any) -> Any:
                return DECLINED

        with self.assertRaises(HookError) as raised:
            make_engine([NoParams])
        message = str(raised.exception)
        self.assertIn("test_no_params", message)
        self.assertIn("hook rcpt", message)
        self.assertIn("hook_rcpt(self, transaction, rcpt, **params)", message)

    def test_too_many_arguments_is_refused_at_load(self) -> None:
        class Greedy(Plugin):
            name = "test_greedy"

            def hook_helo(self, transaction: Transaction, host: str, extra: str) -> Any:
                return DECLINED

        with self.assertRaises(ConfigError) as raised:
            make_engine([Greedy])
        self.assertIn("hook_helo(self, transaction, host)", str(raised.exception))

    def test_unknown_hook_is_refused(self) -> None:
        class Typo(Plugin):
            name = "test_typo"

            def register(self, *args: str) -> None:
                self.register_hook("rcpt_to", lambda transaction, rcpt, **params: DECLINED)

        with self.assertRaises(HookError) as raised:
            make_engine([Typo])
        self.assertIn("there is no hook 'rcpt_to'", str(raised.exception))

    def test_config_file_line_is_named(self) -> None:
        # the start-up error names the config line too
        with self.assertRaises(ConfigError) as raised:
            make_engine(["rcpt_ok", "no_such_plugin_here arg"])
        self.assertIn("line 2 ('no_such_plugin_here arg')", str(raised.exception))


class SyncOnlyTests(unittest.TestCase):
    def test_async_def_on_a_sync_only_hook_is_refused_at_load(self) -> None:
        for hook in ("config", "mail_parse", "logging"):
            args = {"config": "name", "mail_parse": "", "logging": "level, hook, plugin, message"}[hook]
            namespace: dict[str, Any] = {}
            exec(f"async def hook_{hook}(self, transaction, {args}):\n    return None", namespace)
            cls = type(f"Async_{hook}", (Plugin,), {"name": f"test_async_{hook}",
                                                    f"hook_{hook}": namespace[f"hook_{hook}"]})
            with self.assertRaises(HookError) as raised:
                make_engine([cls])
            self.assertIn(f"test_async_{hook}", str(raised.exception))
            self.assertIn(f"hook {hook} must answer at once", str(raised.exception))

    def test_a_sync_only_hook_declared_to_return_a_deferred_is_refused_at_load(self) -> None:
        class Promises(Plugin):
            name = "test_promises"

            def hook_config(self, transaction: Any, name: str) -> Deferred[Any]:
                return succeed(DECLINED)

        with self.assertRaises(HookError) as raised:
            make_engine([Promises])
        self.assertIn("hook config must answer at once; it is declared to return Deferred",
                      str(raised.exception))

    def test_a_deferred_from_a_sync_only_hook_is_refused_at_run_time(self) -> None:
        class DeferredConfig(Plugin):
            name = "test_deferred_config"

            def hook_config(self, transaction: Any, name: str) -> Any:
                return succeed((OK, "late"))

        engine = make_engine([Logs, DeferredConfig], config={"me": "mx.test"})
        logs = engine.plugin("test_hook_logs")
        self.assertEqual(engine.config_list("me"), ["mx.test"])  # the file, not the refused answer
        self.assertTrue(any("must answer at once" in line[3] and line[2] == "test_deferred_config"
                            for line in logs.lines), logs.lines)  # type: ignore[attr-defined]

    def test_config_hook_answers_in_every_form(self) -> None:
        class Answers(Plugin):
            name = "test_config_answers"

            def hook_config(self, transaction: Any, name: str) -> Any:
                return {"a": (OK, "one"), "b": (OK, "x", "y"), "c": HookResult(OK, "hr"),
                        "d": HookResult(OK, None, ["v1", "v2"])}.get(name, DECLINED)

        engine = make_engine([Answers], config={"e": "from file"})
        self.assertEqual(engine.config_list("a"), ["one"])
        self.assertEqual(engine.config_list("b"), ["x", "y"])
        self.assertEqual(engine.config_list("c"), ["hr"])
        self.assertEqual(engine.config_list("d"), ["v1", "v2"])
        self.assertEqual(engine.config_list("e"), ["from file"])

    def test_a_broken_logging_plugin_does_not_recurse(self) -> None:
        class Broken(Plugin):
            name = "test_broken_logger"

            def hook_logging(self, transaction: Any, level: int, hook: Any, plugin: Any, message: str) -> Any:
                raise RuntimeError("logger down")

        engine = make_engine([Broken])
        engine.log(3, "hello")  # must neither raise nor loop
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(engine.hooks.faults[("test_broken_logger", "logging")], 1)


class CancelTests(unittest.TestCase):
    def test_cancelling_a_run_is_quiet(self) -> None:
        pending: Deferred[Any] = Deferred()

        class Slow(Plugin):
            name = "test_slow"

            def hook_rcpt(self, transaction: Transaction, rcpt: Any, **params: Any) -> Any:
                return pending

        engine = make_engine([Logs, Slow])
        result = engine.hooks.run("rcpt", None, "x")
        assert isinstance(result, Deferred)
        result.cancel()
        self.failureResultOf(result)
        self.assertEqual(engine.hooks.faults, {})
        logs = engine.plugin("test_hook_logs").lines  # type: ignore[attr-defined]
        self.assertFalse([line for line in logs if "PLUGIN ERROR" in line[3]])

    def test_engine_bug_after_an_answer_still_ends_the_chain(self) -> None:
        pending: Deferred[Any] = Deferred()

        class Slow(Plugin):
            name = "test_slow_answer"

            def hook_rcpt(self, transaction: Transaction, rcpt: Any, **params: Any) -> Any:
                return pending

        engine = make_engine([Slow])

        def broken_observer(*args: Any) -> Any:
            raise RuntimeError("observer exploded")

        engine.hooks._answer = broken_observer  # type: ignore[method-assign]
        result = engine.hooks.run("rcpt", None, "x")
        pending.callback(OK)
        answer = self.successResultOf(result)  # type: ignore[arg-type]
        self.assertTrue(is_fault(answer))
        self.flushLoggedErrors(RuntimeError)


class Breaks(Plugin):
    """Raises in the hook named by ``broken``."""

    name = "test_breaks"
    broken = ""

    def hook_mail_pre(self, transaction: Transaction, path: str, params: Any) -> Any:
        return self._maybe("mail_pre")

    def hook_rcpt_pre(self, transaction: Transaction, path: str, params: Any) -> Any:
        return self._maybe("rcpt_pre")

    def hook_mail_parse(self, transaction: Transaction) -> Any:
        return self._maybe("mail_parse")

    def hook_data_headers_end(self, transaction: Transaction) -> Any:
        return self._maybe("data_headers_end")

    def _maybe(self, hook: str) -> Any:
        if type(self).broken == hook:
            raise RuntimeError(f"{hook} broke")
        return DECLINED


class FailClosedTests(unittest.TestCase):
    def dialogue(self, hook: str) -> Any:
        from tests.core_support import CaptureQueue, Dialogue

        Breaks.broken = hook
        engine = make_engine([Breaks, "rcpt_ok", CaptureQueue], config={"rcpthosts": "example.com"})
        d = Dialogue(engine)
        d.send("EHLO client.test")
        return d

    def test_envelope_hooks_without_a_reply_table_fail_closed(self) -> None:
        for hook in ("mail_pre", "mail_parse"):
            d = self.dialogue(hook)
            [reply] = d.send("MAIL FROM:<a@example.org>")
            self.assertEqual(reply[:2], (451, "4.3.0"), hook)
            self.assertIsNone(d.session.transaction.sender, hook)
            self.flushLoggedErrors(RuntimeError)
        d = self.dialogue("rcpt_pre")
        d.send("MAIL FROM:<a@example.org>")
        self.assertEqual(d.send("RCPT TO:<b@example.com>")[0][:2], (451, "4.3.0"))
        self.assertEqual(d.session.transaction.recipients, [])
        self.flushLoggedErrors(RuntimeError)

    def test_a_broken_data_headers_end_answers_once_at_the_end_of_the_message(self) -> None:
        d = self.dialogue("data_headers_end")
        replies = d.send("MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>", "DATA")
        self.assertEqual([r[0] for r in replies], [250, 250, 354])
        self.assertEqual(d.send_raw(b"Subject: x\r\n\r\nbody line\r\n"), [])  # no reply mid-message
        self.assertEqual([r[:2] for r in d.send_raw(b".\r\n")], [(451, "4.3.0")])
        self.assertEqual(d.engine.plugins[-1].messages, [])  # type: ignore[attr-defined]
        self.assertEqual(d.send("NOOP")[0][0], 250)  # in step with the client
        self.flushLoggedErrors(RuntimeError)
