"""basic_headers: no data, no From or no Date (or no Subject, when required) is refused."""

from pathlib import Path

from twisted.trial import unittest

from qptwisted import DECLINED, DENY
from qptwisted.testing import make_engine, make_transaction, run_hook

HERE = Path(__file__).resolve().parent
ANSWERS = [
    ("", (DENY, "You have to send some data first")),
    ("Date: today\n\nhi\n", (DENY, "Mail with no From header not accepted here")),
    ("From: a@example.org\n\nhi\n", (DENY, "Mail with no Date header not accepted here")),
    ("From: a@example.org\nDate: today\n\nhi\n", (DENY, "Mail with no Subject header not accepted here")),
    ("From: a@example.org\nDate: today\nSubject: hi\n\nhi\n", (DECLINED, None)),
]


class BasicHeadersTests(unittest.TestCase):
    def test_answers(self) -> None:
        engine = make_engine(["basic_headers require From,Date,Subject"], plugin_dirs=[HERE])
        for message, answer in ANSWERS:
            transaction = make_transaction(engine, message=message)
            result = self.successResultOf(run_hook(engine, "data_post", transaction))
            self.assertEqual((result.code, result.message), answer)
