"""The config and user_config hooks (qpsmtpd's precedence: user_config > config > file)."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from qptwisted import DECLINED, OK, Address, Plugin
from qptwisted.testing import make_engine


class PerUser(Plugin):
    name = "test_per_user_config"

    def hook_user_config(self, transaction: Any, address: Address, name: str) -> Any:
        if address.host == "vip.test" and name == "spam_threshold":
            return OK, "10"
        return DECLINED


class Global(Plugin):
    name = "test_global_config"

    def hook_config(self, transaction: Any, name: str) -> Any:
        return (OK, "7") if name == "spam_threshold" else DECLINED


class UserConfigTests(unittest.SynchronousTestCase):
    def test_user_config_hook_wins_for_its_address(self) -> None:
        engine = make_engine([PerUser, Global], config={"spam_threshold": "5"})
        self.assertEqual(engine.user_config(Address.parse("<a@vip.test>"), "spam_threshold"), ["10"])

    def test_other_addresses_fall_back_to_the_config_hook(self) -> None:
        engine = make_engine([PerUser, Global], config={"spam_threshold": "5"})
        self.assertEqual(engine.user_config(Address.parse("<a@other.test>"), "spam_threshold"), ["7"])

    def test_without_hooks_the_file_answers(self) -> None:
        engine = make_engine([], config={"spam_threshold": "5"})
        self.assertEqual(engine.user_config(Address.parse("<a@vip.test>"), "spam_threshold"), ["5"])
        self.assertEqual(engine.config_list("spam_threshold"), ["5"])
