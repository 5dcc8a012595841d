"""loadcheck: DENYSOFT at connect above the load limit, cached."""

from __future__ import annotations

from twisted.trial import unittest

from tests.core_support import Dialogue
from tests.plugins.policy_support import advance, codes, engine, plugin


class LoadCheckTests(unittest.TestCase):
    def test_table_and_cache(self) -> None:
        eng = engine(["loadcheck max_load 4 cache_time 10"])
        loadcheck = plugin(eng, "loadcheck")
        load = [1.0]
        calls: list[int] = []

        def getloadavg() -> tuple[float, float, float]:
            calls.append(1)
            return load[0], 0.0, 0.0

        loadcheck.getloadavg = getloadavg
        self.assertEqual(codes(Dialogue(eng).greeting), [220])
        load[0] = 9.0
        self.assertEqual(codes(Dialogue(eng).greeting), [220])  # cached
        advance(eng, 10)
        self.assertEqual(Dialogue(eng).greeting,
                         [(450, "4.7.1", "Server load too high, please try again later")])
        self.assertEqual(len(calls), 2)

    def test_real_load_is_read(self) -> None:
        self.assertIsInstance(plugin(engine(["loadcheck"]), "loadcheck").load(), float)
