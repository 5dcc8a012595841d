"""Small MaxMind DB files written by the tests (``mmdb-writer``); nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial import unittest

#: network -> (country, continent, city, latitude, longitude)
PLACES = {
    "192.0.2.0/24": ("DE", "EU", "Berlin", 52.52, 13.405),
    "198.51.100.0/24": ("US", "NA", "New York", 40.7128, -74.006),
    "203.0.113.0/24": ("KP", "AS", "Pyongyang", 39.0392, 125.7625),
    "2001:db8::/32": ("FR", "EU", "Paris", 48.8566, 2.3522),
}
#: network -> (ASN, organisation)
NETWORKS = {"192.0.2.0/24": (64496, "Example Net"), "198.51.100.0/24": (64511, "Other Net")}
COUNTRY_NAMES = {"DE": "Germany", "US": "United States", "KP": "North Korea", "FR": "France"}


def _writer(kind: str) -> Any:
    try:
        from mmdb_writer import MMDBWriter
    except ImportError as err:
        raise unittest.SkipTest(f"mmdb-writer is not installed: {err}") from err
    return MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=kind, languages=["en"],
                      description={"en": "qptwisted test data"}, int_type="u32", float_type="f64")


def write_city_db(path: Path) -> Path:
    """A GeoIP2-City style database of :data:`PLACES`."""
    from netaddr import IPSet

    writer = _writer("GeoIP2-City")
    for network, (country, continent, city, lat, lon) in PLACES.items():
        writer.insert_network(IPSet([network]), {
            "country": {"iso_code": country, "names": {"en": COUNTRY_NAMES[country]}},
            "continent": {"code": continent},
            "city": {"names": {"en": city}},
            "location": {"latitude": lat, "longitude": lon},
        })
    writer.to_db_file(str(path))
    return path


def write_asn_db(path: Path) -> Path:
    """A GeoLite2-ASN style database of :data:`NETWORKS`."""
    from netaddr import IPSet

    writer = _writer("GeoLite2-ASN")
    for network, (number, organisation) in NETWORKS.items():
        writer.insert_network(IPSet([network]), {"autonomous_system_number": number,
                                                 "autonomous_system_organization": organisation})
    writer.to_db_file(str(path))
    return path
