"""The new loggers: devnull, connection_id, transaction_id, adaptive, json (syslog: test_syslog.py)."""

from __future__ import annotations

import io
import json
import os
from typing import Any

from twisted.trial import unittest

from qptwisted import LOGINFO
from tests.plugins.policy_support import engine, plugin

BAD = {"badmailfrom": ["x@spam.test"]}


def logged(eng: Any, name: str) -> io.StringIO:
    stream = io.StringIO()
    plugin(eng, name).stream = stream
    return stream


class DevNullTests(unittest.TestCase):
    def test_swallows(self) -> None:
        eng = engine(["logging/devnull", "badmailfrom"], BAD)
        eng.log(0, "nothing to see")  # no exception, nothing written


class ConnectionIdTests(unittest.TestCase):
    def test_lines_carry_the_connection_id(self) -> None:
        eng = engine(["logging/connection_id 7", "badmailfrom"], BAD)
        stream = logged(eng, "logging/connection_id")
        from tests.core_support import Dialogue

        smtp = Dialogue(eng)
        smtp.send("EHLO c.test", "MAIL FROM:<x@spam.test>")
        conn = smtp.session.connection.id
        self.assertIn(
            f"{os.getpid()} [{conn}] badmailfrom: fail, <x@spam.test> in badmailfrom", stream.getvalue()
        )
        eng.log(LOGINFO, "outside")
        self.assertTrue(stream.getvalue().endswith(f"{os.getpid()} [-] outside\n"))

    def test_level(self) -> None:
        eng = engine(["logging/connection_id loglevel 3"])
        stream = logged(eng, "logging/connection_id")
        eng.log(LOGINFO, "too detailed")
        self.assertEqual(stream.getvalue(), "")


class TransactionIdTests(unittest.TestCase):
    def test_tag(self) -> None:
        eng = engine(["logging/transaction_id 7", "badmailfrom"], BAD)
        stream = logged(eng, "logging/transaction_id")
        from tests.core_support import Dialogue

        smtp = Dialogue(eng)
        smtp.send("EHLO c.test", "MAIL FROM:<x@spam.test>")
        tag = f"[{smtp.session.connection.id}.{smtp.session.transaction.id}]"
        self.assertIn(f"{tag} badmailfrom: fail", stream.getvalue())


class AdaptiveTests(unittest.TestCase):
    def test_refused_transaction_logs_in_detail(self) -> None:
        eng = engine(["logging/adaptive loglevel 2 accept 3 reject 6 prefix >", "badmailfrom"], BAD)
        stream = logged(eng, "logging/adaptive")
        from tests.core_support import Dialogue

        smtp = Dialogue(eng)
        smtp.send("EHLO c.test", "MAIL FROM:<ok@example.org>")
        smtp.send("RSET")
        self.assertNotIn("badmailfrom: pass", stream.getvalue())
        smtp.send("MAIL FROM:<x@spam.test>", "RSET")
        self.assertIn(">badmailfrom: fail, <x@spam.test> in badmailfrom", stream.getvalue())

    def test_immediate_lines(self) -> None:
        eng = engine(["logging/adaptive loglevel 4"])
        stream = logged(eng, "logging/adaptive")
        eng.log(3, "error now")
        self.assertIn("error now", stream.getvalue())


class JsonTests(unittest.TestCase):
    def test_one_object_per_line_with_ids(self) -> None:
        eng = engine(["logging/json loglevel 7", "badmailfrom"], BAD)
        stream = logged(eng, "logging/json")
        from tests.core_support import Dialogue

        smtp = Dialogue(eng, remote_ip="2001:db8::7")
        smtp.send("EHLO c.test", "MAIL FROM:<x@spam.test>")
        events = [json.loads(line) for line in stream.getvalue().splitlines()]
        fail = [event for event in events if event.get("plugin") == "badmailfrom"][-1]
        self.assertEqual(
            (fail["conn"], fail["ip"], fail["level"]), (smtp.session.connection.id, "2001:db8::7", "INFO")
        )
        self.assertEqual(fail["txn"], smtp.session.transaction.id)
        self.assertTrue(fail["time"].endswith("Z"))

    def test_file_output(self) -> None:
        path = os.path.abspath(self.mktemp())
        eng = engine([f"logging/json loglevel 6 {path}"])
        eng.log(LOGINFO, "to the file")
        with open(path, encoding="utf-8") as handle:
            self.assertEqual(json.loads(handle.readline())["msg"], "to the file")
        plugin(eng, "logging/json").close()
