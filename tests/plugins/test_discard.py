"""queue/discard: 250 and nothing kept."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial import unittest

from qptwisted import OK
from qptwisted.testing import SMTPDialogue, make_engine, make_transaction, run_hook


class DiscardTests(unittest.TestCase):
    def test_hook_answers_ok(self) -> None:
        engine = make_engine(["queue/discard"])
        transaction = make_transaction(engine, sender="<a@example.org>", recipients=["<b@mx.test>"],
                                       message=b"Subject: x\n\nbody\n")
        result = self.successResultOf(run_hook(engine, "queue", transaction))
        self.assertEqual((result.code, result.message), (OK, "Queued (discarded)"))

    def test_dialogue_keeps_nothing(self) -> None:
        spool = Path(self.mktemp())
        engine = make_engine(["rcpt_ok", "queue/discard"],
                             config={"spool_dir": str(spool), "size_threshold": "100"})
        smtp = SMTPDialogue(engine)
        body = "Subject: big\n\n" + ("x" * 70 + "\n") * 50
        replies = smtp.deliver("<a@example.org>", ["<b@mx.test>"], body)
        self.assertEqual(replies[-1], (250, "2.6.0", "Queued (discarded)"))
        self.assertTrue(spool.is_dir())  # the body went to a spool file ...
        self.assertEqual(os.listdir(spool), [])  # ... which is gone after the 250
        # the connection goes on: a second message in the same session
        self.assertEqual(smtp.deliver("<a@example.org>", ["<b@mx.test>"], "Subject: 2\n\nhi\n")[-1][0], 250)
        smtp.close()
