"""content_log: messages appended to a dated file, off the reactor thread."""

from __future__ import annotations

import os
import time

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from qptwisted.testing import make_engine, make_transaction, run_hook
from tests.plugins.policy_support import plugin


class ContentLogTests(unittest.TestCase):
    def test_file_name_and_enabled_flag(self) -> None:
        engine = make_engine(["content_log"], {"content_log_file": "mail/%Y-%m"})
        content_log = plugin(engine, "content_log")
        self.assertFalse(content_log.exclude())
        name = content_log.log_filename(0)
        self.assertTrue(name.endswith(os.path.join("mail", time.strftime("%Y-%m", time.localtime(0)))))
        self.assertEqual(os.path.dirname(os.path.dirname(name)),
                         os.path.dirname(os.path.abspath(engine.config.directory)))
        disabled = plugin(make_engine(["content_log"], {"content_log_enabled": "0"}), "content_log")
        self.assertTrue(disabled.exclude())
        self.assertTrue(plugin(make_engine(["content_log"]), "content_log").log_filename(0).endswith(
            os.path.join("mail", time.strftime("%Y%m%d", time.localtime(0)))))

    def test_message_appended(self) -> Deferred[None]:
        target = self.mktemp()
        from twisted.internet import reactor

        engine = make_engine(["content_log"], {"content_log_file": os.path.abspath(target)}, clock=reactor)
        txn = make_transaction(engine, sender="<a@example.org>", recipients=["<b@example.com>"],
                               message=b"Subject: logged\n\nbody\n")

        def check(result: object) -> None:
            with open(target, "rb") as handle:
                data = handle.read()
            self.assertTrue(data.startswith(b"From a@example.org "))
            self.assertIn(b"Subject: logged\n\nbody\n", data)

        return run_hook(engine, "data_post", txn).addCallback(check)
