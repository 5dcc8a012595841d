"""Policy groups: one group per transaction, 452 4.5.3 for another group, per-group config."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from qptwisted import OK, Address, ConfigError, HookAnswer, Plugin, Transaction
from qptwisted.core.groups import GroupTable, check_group_name
from qptwisted.testing import make_engine

from .core_support import CaptureQueue, Dialogue

GROUPS = {
    "policy_groups": ["# pattern group", "ceo@example.com vip", "@vip.test vip", "small.test small",
                      "/^list-.*@example\\.com$/ lists"],
    "groups/small/databytes": "200",
    "groups/vip/greylisting": "0",
}


class Accept(Plugin):
    """Accepts every recipient; notes the group and the per-group config each transaction had."""

    name = "test_accept"

    def register(self, *args: str) -> None:
        self.queued: list[tuple[str | None, list[str], str | None]] = []

    def hook_rcpt(self, transaction: Transaction, rcpt: Address, **params: Any) -> HookAnswer:
        return OK

    def hook_queue(self, transaction: Transaction) -> HookAnswer:
        self.queued.append((transaction.policy_group, [r.address for r in transaction.recipients],
                            self.group_config(transaction, "spam_threshold")))
        return OK, "Queued"


class Base(unittest.SynchronousTestCase):
    def dialogue(self, *plugins: Any, config: dict[str, Any] | None = None) -> Dialogue:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.engine = make_engine([*plugins, Accept, CaptureQueue], config={**GROUPS, **(config or {})},
                                  clock=self.clock)
        self.addCleanup(self.engine.close)
        self.accept = next(p for p in self.engine.plugins if isinstance(p, Accept))
        d = Dialogue(self.engine)
        self.addCleanup(d.close)
        d.send("EHLO client.test")
        return d

    def deliver(self, d: Dialogue, *recipients: str,
                body: bytes = b"Subject: x\r\n\r\nhello\r\n") -> list[Any]:
        replies = d.send("MAIL FROM:<a@sender.test>", *(f"RCPT TO:<{r}>" for r in recipients))
        if any(reply[0] == 250 for reply in replies[1:]):
            replies += d.send("DATA")
            replies += d.message(body)
        return replies


class TableTests(unittest.SynchronousTestCase):
    def test_patterns_first_match_wins(self) -> None:
        table = GroupTable(GROUPS["policy_groups"][1:] + ["* rest"])
        cases = {"ceo@example.com": "vip", "CEO@Example.COM": "vip", "x@vip.test": "vip",
                 "x@sub.vip.test": "rest", "y@small.test": "small", "list-dev@example.com": "lists",
                 "bob@example.com": "rest"}
        for address, group in cases.items():
            user, _, host = address.partition("@")
            self.assertEqual(table.group_of(Address(user, host)), group, address)
        self.assertIsNone(GroupTable(["@vip.test vip"]).group_of(Address("a", "b.test")))

    def test_bad_lines_stop_the_engine(self) -> None:
        for bad in (["only-a-pattern"], ["a.test ../etc"], ["/[/ broken"], ["a.test b c"]):
            self.assertRaises(ConfigError, make_engine, [], config={"policy_groups": bad})

    def test_group_names_are_directory_names(self) -> None:
        self.assertEqual(check_group_name("vip-1.a_b"), "vip-1.a_b")
        for bad in ("", "..", "a/b", ".hidden", "a..b"):
            self.assertRaises(ValueError, check_group_name, bad)


class TransactionTests(Base):
    def test_the_first_accepted_recipient_fixes_the_group_another_group_gets_452(self) -> None:
        d = self.dialogue()
        replies = self.deliver(d, "x@vip.test", "bob@example.com", "ceo@example.com")
        self.assertEqual([r[:2] for r in replies[:4]], [(250, "2.1.0"), (250, "2.1.5"), (452, "4.5.3"),
                                                        (250, "2.1.5")])
        self.assertIn("another policy group", replies[2][2])
        self.assertEqual(self.accept.queued, [("vip", ["x@vip.test", "ceo@example.com"], None)])
        # the sender's MTA retries the 452 recipient in a transaction of its own: its own policy applies
        replies = self.deliver(d, "bob@example.com")
        self.assertEqual(replies[-1][:2], (250, "2.6.0"))
        self.assertEqual(self.accept.queued[-1], (None, ["bob@example.com"], None))

    def test_a_refused_first_recipient_fixes_nothing(self) -> None:
        d = self.dialogue(config={"max_recipients": "5"})
        d.send("MAIL FROM:<a@sender.test>")
        self.assertEqual(d.send("RCPT TO:<x@vip.test> NOTIFY=BAD")[0][0], 501)
        self.assertEqual(d.send("RCPT TO:<bob@example.com>")[0][0], 250)
        self.assertIsNone(d.session.transaction.policy_group)
        self.assertEqual(d.send("RCPT TO:<x@vip.test>")[0][:2], (452, "4.5.3"))

    def test_per_group_size_limit(self) -> None:
        d = self.dialogue()
        big = b"Subject: big\r\n\r\n" + b"z" * 300 + b"\r\n"
        self.assertEqual(self.deliver(d, "a@small.test", body=big)[-1][:2], (552, "5.3.4"))
        self.assertEqual(self.deliver(d, "a@other.test", body=big)[-1][:2], (250, "2.6.0"))
        d.send("MAIL FROM:<a@sender.test> SIZE=300")
        self.assertEqual(d.send("RCPT TO:<a@small.test>")[0][:2], (552, "5.3.4"))
        self.assertEqual(d.send("RCPT TO:<a@other.test>")[0][:2], (250, "2.1.5"))

    def test_per_group_size_limit_with_bdat(self) -> None:
        d = self.dialogue()
        d.send("MAIL FROM:<a@sender.test>", "RCPT TO:<a@small.test>")
        self.assertEqual(d.send_raw(b"BDAT 300 LAST\r\n" + b"z" * 300)[0][:2], (552, "5.3.4"))

    def test_group_config_overrides_the_global_file(self) -> None:
        d = self.dialogue(config={"spam_threshold": "5", "groups/lists/spam_threshold": "8"})
        self.deliver(d, "list-dev@example.com")
        self.deliver(d, "bob@example.com")
        self.assertEqual([entry[2] for entry in self.accept.queued], ["8", "5"])

    def test_a_plugin_assigns_groups_through_user_config(self) -> None:
        class Directory(Plugin):
            name = "test_directory"

            def hook_user_config(self, transaction: Any, address: Address, name: str) -> HookAnswer:
                if name == "policy_group" and address.user.startswith("vip"):
                    return OK, "gold"
                return None

        d = self.dialogue(Directory)
        replies = self.deliver(d, "vip1@example.com", "x@vip.test")
        self.assertEqual([r[0] for r in replies[1:3]], [250, 452])
        self.assertEqual(self.accept.queued[0][0], "gold")


class DocsExampleTests(Base):
    """The scanner example of docs/esmtp.md honours the group's spam_threshold."""

    def test_spam_threshold_per_group(self) -> None:
        import re
        from pathlib import Path

        import qptwisted

        docs = (Path(__file__).resolve().parent.parent / "docs" / "esmtp.md").read_text(encoding="utf-8")
        [block] = [b for b in re.findall(r"```python\n(.*?)```", docs, re.S) if "SpamThreshold" in b]
        namespace: dict[str, Any] = dict(vars(qptwisted))
        exec(block, namespace)
        d = self.dialogue(namespace["SpamThreshold"],
                          config={"spam_threshold": "5", "groups/lists/spam_threshold": "8"})
        body = b"Subject: offer\r\n\r\n" + b"viagra " * 6 + b"\r\n"
        self.assertEqual(self.deliver(d, "list-dev@example.com", body=body)[-1][:2], (250, "2.6.0"))
        refused = self.deliver(d, "bob@example.com", body=body)[-1]
        self.assertEqual(refused[:2], (552, "5.7.1"))
        self.assertEqual(refused[2], "Spam score 6.0 (threshold 5.0)")


class GreylistingTests(Base):
    def greylisting(self) -> str:
        return f"greylisting black_timeout 60 db_dir {self.mktemp()}"

    def test_greylisting_off_for_one_group_on_for_the_others(self) -> None:
        import os

        line = self.greylisting()
        os.makedirs(line.split()[-1])
        d = self.dialogue(line)
        self.assertEqual(self.deliver(d, "x@vip.test")[-1][:2], (250, "2.6.0"))
        replies = d.send("MAIL FROM:<a@sender.test>", "RCPT TO:<bob@example.com>")
        self.assertEqual([r[0] for r in replies], [250, 450])
        self.assertIn("temporarily denied", replies[1][2])
        # a second recipient of the greylisted group is answered from the first decision
        self.assertEqual(d.send("RCPT TO:<carol@example.com>")[0][0], 450)
        # the greylisted one, retried after the black window, passes
        d.send("RSET")
        self.clock.advance(120)
        self.assertEqual(self.deliver(d, "bob@example.com")[-1][:2], (250, "2.6.0"))
