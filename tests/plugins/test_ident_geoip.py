"""ident/geoip against MaxMind DB files the tests write themselves."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial import unittest

from qptwisted import DECLINED, DENY, ConfigError, Engine
from qptwisted.testing import (
    CaptureQueue,
    SMTPDialogue,
    make_connection,
    make_engine,
    make_transaction,
    run_hook,
)

from .geoip_support import write_asn_db, write_city_db


class GeoIPTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        write_city_db(self.dir / "GeoLite2-City.mmdb")
        write_asn_db(self.dir / "GeoLite2-ASN.mmdb")

    def engine(self, extra: str = "", config: dict[str, object] | None = None) -> Engine:
        engine = make_engine([f"ident/geoip db_dir {self.dir} {extra}"], config=config)  # type: ignore[arg-type]
        self.addCleanup(engine.close)
        return engine

    def connect(self, engine: Engine, ip: str) -> tuple[object, dict[str, object]]:
        txn = make_transaction(engine, connection=make_connection(ip))
        result = self.successResultOf(run_hook(engine, "connect", txn))
        return result, txn.connection.notes

    def test_notes_of_a_known_client(self) -> None:
        result, notes = self.connect(self.engine("distance 192.0.2.25"), "198.51.100.7")
        self.assertEqual(result.code, DECLINED)  # type: ignore[attr-defined]
        self.assertEqual({k: v for k, v in notes.items() if k.startswith("geoip_")}, {
            "geoip_country": "US", "geoip_country_name": "United States", "geoip_continent": "NA",
            "geoip_city": "New York", "geoip_asn": 64511, "geoip_asn_org": "Other Net",
            "geoip_distance": 6385})

    def test_ipv6_and_unknown_clients(self) -> None:
        engine = self.engine()
        _, notes = self.connect(engine, "2001:db8::25")
        self.assertEqual((notes["geoip_country"], notes["geoip_city"]), ("FR", "Paris"))
        self.assertNotIn("geoip_distance", notes)
        _, notes = self.connect(engine, "10.1.2.3")
        self.assertFalse([k for k in notes if k.startswith("geoip_")])

    def test_home_coordinates(self) -> None:
        _, notes = self.connect(self.engine("home 48.8566,2.3522"), "192.0.2.9")
        self.assertEqual(notes["geoip_distance"], 877)  # Berlin - Paris

    def test_too_far_costs_karma(self) -> None:
        engine = self.engine("distance 192.0.2.25 too_far 5000")
        _, far = self.connect(engine, "198.51.100.7")
        _, near = self.connect(engine, "2001:db8::1")
        self.assertEqual((far.get("karma"), near.get("karma")), (-1, None))

    def test_blocked_country_continent_and_network(self) -> None:
        engine = self.engine(config={"geoip_block": ["kp  # closed", "continent:NA", "AS64496"]})
        for ip, entry in (("203.0.113.5", "KP"), ("198.51.100.1", "CONTINENT:NA"), ("192.0.2.1", "AS64496")):
            result, _ = self.connect(engine, ip)
            self.assertEqual((result.code, result.message),  # type: ignore[attr-defined]
                             (DENY, f"Connections from {entry} are not accepted here"))
        result, _ = self.connect(engine, "2001:db8::1")
        self.assertEqual(result.code, DECLINED)  # type: ignore[attr-defined]
        txn = make_transaction(engine, connection=make_connection(remote_ip="203.0.113.5", relay_client=True))
        self.assertEqual(self.successResultOf(run_hook(engine, "connect", txn)).code, DECLINED)

    def test_block_reply_in_a_dialogue(self) -> None:
        engine = self.engine("reject_type temp", config={"geoip_block": "KP"})
        smtp = SMTPDialogue(engine, remote_ip="203.0.113.5")
        self.assertEqual(smtp.greeting[0].code, 450)
        self.assertTrue(smtp.closed)
        engine = self.engine("reject 0", config={"geoip_block": "KP"})
        self.assertEqual(SMTPDialogue(engine, remote_ip="203.0.113.5").greeting[0].code, 220)

    def test_headers(self) -> None:
        engine = make_engine([f"ident/geoip db_dir {self.dir} distance 192.0.2.25 add_headers 1", "rcpt_ok",
                              CaptureQueue], config={"rcpthosts": "example.com"})
        smtp = SMTPDialogue(engine, remote_ip="198.51.100.7")
        self.assertEqual(smtp.deliver("<a@example.org>", ["<b@example.com>"], "Subject: x\n\nhi\n")[-1].code,
                         250)
        [message] = engine.plugin("testing/capture").messages  # type: ignore[attr-defined]
        for header in (b"X-GeoIP-Country: US", b"X-GeoIP-Continent: NA", b"X-GeoIP-City: New York",
                       b"X-GeoIP-ASN: 64511", b"X-GeoIP-Distance: 6385"):
            self.assertIn(header, message)

    def test_replaced_database_is_reopened(self) -> None:
        engine = self.engine("reload 60")
        _, notes = self.connect(engine, "192.0.2.1")
        self.assertEqual(notes["geoip_city"], "Berlin")
        from . import geoip_support

        self.patch(geoip_support, "PLACES", {**geoip_support.PLACES,
                                             "192.0.2.0/24": ("AT", "EU", "Wien", 48.2, 16.37)})
        self.patch(geoip_support, "COUNTRY_NAMES", {**geoip_support.COUNTRY_NAMES, "AT": "Austria"})
        new = self.dir / "new.mmdb"
        write_city_db(new)
        os.replace(new, self.dir / "GeoLite2-City.mmdb")
        engine.clock.advance(60)  # type: ignore[attr-defined]
        _, notes = self.connect(engine, "192.0.2.1")
        self.assertEqual(notes["geoip_city"], "Wien")

    def test_bad_arguments(self) -> None:
        with self.assertRaises(ConfigError):
            make_engine([f"ident/geoip db_dir {self.dir}/nothing"])
        with self.assertRaises(ConfigError):
            make_engine([f"ident/geoip db_dir {self.dir} too_far 100"])
        with self.assertRaises(ConfigError):
            make_engine([f"ident/geoip db_dir {self.dir} home north"])
        with self.assertRaises(ConfigError):
            make_engine([f"ident/geoip db_dir {self.dir} distance 10.0.0.1"])
