"""block_subject: listed subjects are refused for the protected domains, in any case or encoding."""

from pathlib import Path

from twisted.trial import unittest

from qptwisted.testing import CaptureQueue, Replies, SMTPDialogue, make_engine

HERE = Path(__file__).resolve().parent
CONFIG = {"rcpthosts": ["example.com", "example.net"], "block_subject": ["Buy now", "Cheap pills"]}


class BlockSubjectTests(unittest.TestCase):
    def deliver(self, line: str, rcpt: str, subject: str) -> Replies:
        engine = make_engine([line, "rcpt_ok", CaptureQueue], CONFIG, plugin_dirs=[HERE])
        return SMTPDialogue(engine).deliver("<a@example.org>", [rcpt], f"Subject: {subject}\n\nhello\n")

    def test_blocked_subject_is_refused(self) -> None:
        self.assertEqual(self.deliver("block_subject all", "<b@example.com>", "BUY NOW")[-1],
                         (552, "5.7.1", "Message denied"))
        self.assertEqual(self.deliver("block_subject all", "<b@example.com>", "=?utf-8?q?Cheap_pills?=")
                         .stopped_at, ".")

    def test_only_the_protected_domains(self) -> None:
        self.assertFalse(self.deliver("block_subject example.com example.net", "<b@example.net>", "Buy now")
                         .accepted)
        self.assertTrue(self.deliver("block_subject example.com", "<b@example.net>", "Buy now").accepted)
        self.assertTrue(self.deliver("block_subject all", "<b@example.com>", "Hello").accepted)
