"""block_subject: the seed talk's subject filter, per recipient domain."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted import DECLINED, DENY, ConfigError
from qptwisted.testing import SMTPDialogue, make_engine, make_transaction, run_hook
from tests.plugins.policy_support import codes, dialogue

SPAM = "From: a@example.org\nSubject: Message From eBay Member\n\nclick here\n"
HAM = "From: a@example.org\nSubject: lunch?\n\nnoon\n"


class BlockSubjectTests(unittest.TestCase):
    def test_all_domains(self) -> None:
        smtp = dialogue(["block_subject all"])
        self.assertEqual(
            smtp.deliver("<a@example.org>", ["<bob@example.com>"], SPAM)[-1],
            (552, "5.7.1", "Message subject not accepted here"),
        )
        self.assertEqual(codes(smtp.deliver("<a@example.org>", ["<bob@example.com>"], HAM))[-1], 250)

    def test_only_listed_domains(self) -> None:
        smtp = dialogue(["block_subject example.net"])
        self.assertEqual(codes(smtp.deliver("<a@example.org>", ["<bob@example.com>"], SPAM))[-1], 250)
        self.assertEqual(
            smtp.deliver("<a@example.org>", ["<bob@example.com>", "<c@example.net>"], SPAM)[-1][0], 552
        )

    def test_config_file_with_regex(self) -> None:
        engine = make_engine(["block_subject all"], {"block_subject": ["/v[i1]agra/", "Exact Subject"]})
        for subject, code in (
            ("Cheap V1AGRA now", DENY),
            ("exact   subject", DENY),
            ("Exact Subject 2", DECLINED),
        ):
            txn = make_transaction(
                engine,
                sender="<a@example.org>",
                recipients=["<b@example.com>"],
                message=f"Subject: {subject}\n\nx\n".encode(),
            )
            self.assertEqual(self.successResultOf(run_hook(engine, "data_post", txn)).code, code, subject)

    def test_needs_arguments(self) -> None:
        self.assertRaises((ConfigError, ValueError), make_engine, ["block_subject"])


class GuideExampleTests(unittest.TestCase):
    """The test shown in docs/policy-plugins.md, verbatim."""

    def test_spam_subject_is_refused(self) -> None:
        engine = make_engine(
            ["block_subject all", "rcpt_ok", "queue/discard"],
            {"rcpthosts": "example.com", "block_subject": "Buy now"},
        )
        smtp = SMTPDialogue(engine)
        replies = smtp.deliver("<a@example.org>", ["<b@example.com>"], "Subject: BUY NOW\n\nx\n")
        self.assertEqual(replies[-1], (552, "5.7.1", "Message subject not accepted here"))


class EncodedSubjectTests(unittest.TestCase):
    """Spammers encode subjects (RFC 2047) or send raw UTF-8: the filter sees the decoded text."""

    def verdict(self, raw_subject: bytes) -> object:
        engine = make_engine(["block_subject all"], {"block_subject": ["/v[i1]agra/", "gewinn für sie"]})
        txn = make_transaction(engine, sender="<a@example.org>", recipients=["<b@example.com>"],
                               message=b"From: a@example.org\nSubject: " + raw_subject + b"\n\nbody\n")
        return self.successResultOf(run_hook(engine, "data_post", txn)).code

    def test_rfc2047_base64_and_quoted_printable(self) -> None:
        self.assertEqual(self.verdict(b"=?UTF-8?B?Q2hlYXAgVmlhZ3Jh?="), DENY)  # "Cheap Viagra"
        self.assertEqual(self.verdict(b"=?iso-8859-1?q?Gewinn_f=FCr_Sie?="), DENY)
        self.assertEqual(self.verdict(b"=?UTF-8?B?bHVuY2g/?="), DECLINED)  # "lunch?"

    def test_raw_8bit_subject(self) -> None:
        self.assertEqual(self.verdict("Gewinn für Sie".encode()), DENY)
        self.assertEqual(self.verdict(b"caf\xe9 ol\xe9"), DECLINED)  # not UTF-8: read, not a crash
