"""ident/geoip: country, continent, city, network (ASN) and distance of the client, from a MaxMind DB.

qpsmtpd's ``ident/geoip`` for GeoIP2/GeoLite2 databases (``.mmdb``, read
with MaxMind's own reader ``maxminddb``; the old GeoIP1 ``.dat`` files are
gone). At ``connect`` the client's address is looked up and the connection
notes are set for other plugins (``greylisting geoip``, ``karma``, your
own):

``geoip_country`` (ISO code, ``DE``), ``geoip_country_name``,
``geoip_continent`` (``EU``), ``geoip_city``, ``geoip_asn`` (a number),
``geoip_asn_org``, ``geoip_distance`` (kilometres from us)

A client too far away (``too_far``) loses a point of karma. Clients from
the countries, continents or networks listed in ``config/geoip_block`` are
refused at ``connect`` (``reject``/``reject_type``; relay clients and
whitelisted hosts never). With ``add_headers`` the message gets
``X-GeoIP-Country``, ``X-GeoIP-Continent``, ``X-GeoIP-City``,
``X-GeoIP-ASN`` and ``X-GeoIP-Distance`` headers. A database file that
``geoipupdate`` replaces is reopened within ``reload`` seconds. Lookups are
in a memory-mapped file: they do not block.

Arguments (``name value`` pairs):

``db PATH``
    the City or Country database (default: the first of
    ``GeoIP2-City.mmdb``, ``GeoLite2-City.mmdb``, ``GeoIP2-Country.mmdb``,
    ``GeoLite2-Country.mmdb`` in ``db_dir``).
``asn_db PATH``
    the ASN database (default: ``GeoLite2-ASN.mmdb`` in ``db_dir``, if there).
``db_dir DIR``
    where the databases are (default ``/var/lib/GeoIP``, where Debian's
    ``geoipupdate`` writes them; relative paths: in the config directory).
``distance IP`` or ``home LAT,LON``
    where we are, for ``geoip_distance``: our public address (looked up
    in the database), or coordinates.
``too_far KM``
    take a point of karma from clients farther than this (0: never).
``add_headers 0|1``
    add the ``X-GeoIP-*`` headers (default 0).
``reject 1|0|naughty``, ``reject_type perm|temp|disconnect|temp_disconnect``
    what to do with a blocked client (default: refuse, ``perm``).
``reload N``
    seconds between checks for a new database file (default 3600).

Config file ``geoip_block``: one entry a line, a country code (``KP``), a
continent (``continent:AN``) or a network (``AS64496``).

config/plugins::

    ident/geoip db_dir /var/lib/GeoIP distance 192.0.2.25 too_far 8000 add_headers 1
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from qptwisted import DECLINED, LOGINFO, LOGWARN, ArgumentError, HookAnswer, Transaction, arg
from qptwisted.lib.policy import PolicyPlugin, reject_type_argument

CITY_FILES = ("GeoIP2-City.mmdb", "GeoLite2-City.mmdb", "GeoIP2-Country.mmdb", "GeoLite2-Country.mmdb")
ASN_FILES = ("GeoLite2-ASN.mmdb", "GeoIP2-ASN.mmdb")
EARTH_RADIUS_KM = 6371.0088


def distance_km(one: tuple[float, float], other: tuple[float, float]) -> float:
    """Great-circle distance between two ``(latitude, longitude)`` points (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*one, *other))
    a = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


class _Database:
    """One ``.mmdb`` file, reopened when the file on disk changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader: Any = None
        self.stamp: tuple[int, int] | None = None
        self.refresh()

    def refresh(self) -> bool:
        """Reopen if the file was replaced; True if it was (re)opened."""
        import maxminddb

        info = os.stat(self.path)
        stamp = (info.st_ino, info.st_mtime_ns)
        if stamp == self.stamp:
            return False
        reader = maxminddb.open_database(str(self.path))
        old, self.reader, self.stamp = self.reader, reader, stamp
        if old is not None:
            old.close()
        return True

    def get(self, ip: str) -> dict[str, Any]:
        """The record of ``ip`` (empty when there is none)."""
        try:
            record = self.reader.get(ip)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def close(self) -> None:
        """Close the reader."""
        if self.reader is not None:
            self.reader.close()


def _name(part: Any) -> str | None:
    names = part.get("names") if isinstance(part, dict) else None
    return names.get("en") if isinstance(names, dict) else None


class GeoIP(PolicyPlugin):
    """GeoIP notes, karma for far-away clients, blocking by country."""

    name = "ident/geoip"
    db: Path | None = arg.path(None, "the City or Country database (default: found in db_dir)")
    asn_db: Path | None = arg.path(None, "the ASN database (default: GeoLite2-ASN.mmdb in db_dir, if there)")
    db_dir: Path = arg.path("/var/lib/GeoIP", "where the databases are")
    distance: str | None = arg.str(None, "our public IP address, to measure the distance from")
    home: str | None = arg.str(None, "our coordinates, LAT,LON (instead of distance)")
    too_far: float = arg.float(0, "take a point of karma from clients farther than this many km (0: never)")
    add_headers: bool = arg.bool(False, "add X-GeoIP-* headers to the message")
    reload: float = arg.duration(3600, "seconds between checks for a replaced database file")
    reject_type = reject_type_argument("perm")

    def register(self, *args: str) -> None:
        """Open the databases, work out where we are, read ``geoip_block``."""
        try:
            import maxminddb  # noqa: F401
        except ImportError:
            raise ArgumentError(f"plugin {self.plugin_name} needs the maxminddb package "
                                "(pip install 'qptwisted[geoip]')") from None
        path = self.db or next((self.db_dir / name for name in CITY_FILES if (self.db_dir / name).is_file()),
                               None)
        if path is None or not path.is_file():
            raise ArgumentError(f"plugin {self.plugin_name}: no GeoIP database: "
                                f"{path or ', '.join(str(self.db_dir / n) for n in CITY_FILES)}")
        asn = self.asn_db or next((self.db_dir / n for n in ASN_FILES if (self.db_dir / n).is_file()), None)
        if self.asn_db is not None and not self.asn_db.is_file():
            raise ArgumentError(f"plugin {self.plugin_name}: no ASN database {self.asn_db}")
        self.databases = [_Database(path)] + ([_Database(asn)] if asn is not None else [])
        self.origin = self._origin()
        entries = (line.split("#", 1)[0].strip().upper() for line in self.config_list("geoip_block"))
        self.block = {entry for entry in entries if entry}
        if self.reload > 0:
            self.engine.call_every(self.reload, self.refresh)

    def _origin(self) -> tuple[float, float] | None:
        if self.home:
            try:
                lat, lon = (float(part) for part in self.home.split(","))
            except ValueError:
                raise ArgumentError(f"plugin {self.plugin_name}: argument home: want LAT,LON, got "
                                    f"{self.home!r}") from None
            return lat, lon
        if self.distance:
            location = self.lookup(self.distance).get("location")
            if location is None:
                raise ArgumentError(f"plugin {self.plugin_name}: argument distance: {self.distance} has no "
                                    "location in the database")
            return location
        if self.too_far:
            raise ArgumentError(f"plugin {self.plugin_name}: too_far needs distance IP or home LAT,LON")
        return None

    def refresh(self) -> None:
        """Reopen database files that were replaced."""
        for database in self.databases:
            try:
                if database.refresh():
                    self.log(LOGINFO, f"reopened {database.path}")
            except (OSError, ValueError) as err:
                self.log(LOGWARN, f"cannot reopen {database.path}: {err}")

    def close(self) -> None:
        """Close the databases."""
        for database in self.databases:
            database.close()

    def lookup(self, ip: str) -> dict[str, Any]:
        """What the databases say about ``ip``, as note names without ``geoip_`` (and ``location``)."""
        found: dict[str, Any] = {}
        for database in self.databases:
            record = database.get(ip)
            country = record.get("country") or record.get("registered_country") or {}
            if country.get("iso_code"):
                found["country"] = country["iso_code"]
                found["country_name"] = _name(country)
            if (record.get("continent") or {}).get("code"):
                found["continent"] = record["continent"]["code"]
            if _name(record.get("city")):
                found["city"] = _name(record.get("city"))
            location = record.get("location") or {}
            if "latitude" in location and "longitude" in location:
                found["location"] = (float(location["latitude"]), float(location["longitude"]))
            if record.get("autonomous_system_number"):
                found["asn"] = int(record["autonomous_system_number"])
                found["asn_org"] = record.get("autonomous_system_organization")
        return {key: value for key, value in found.items() if value is not None}

    # -- hooks ---------------------------------------------------------------
    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        found = self.lookup(connection.remote_ip)
        if not found:
            self.log(LOGINFO, f"no record for {connection.remote_ip}")
            return DECLINED
        location = found.pop("location", None)
        if location is not None and self.origin is not None:
            found["distance"] = round(distance_km(self.origin, location))
        for key, value in found.items():
            connection.notes[f"geoip_{key}"] = value
        self.log(LOGINFO, ", ".join(f"{key} {value}" for key, value in found.items()))
        if self.too_far and found.get("distance", 0) > self.too_far:
            self.log(LOGINFO, f"too far: {found['distance']} km")
            self.adjust_karma(transaction, -1)
        blocked = self.blocked(found)
        if blocked and not self.is_immune(transaction):
            return self.get_reject(transaction, f"Connections from {blocked} are not accepted here",
                                   f"blocked: {blocked}")
        return DECLINED

    def blocked(self, found: dict[str, Any]) -> str | None:
        """The entry of ``geoip_block`` that matches, or None."""
        candidates = [str(found.get("country", "")).upper(),
                      f"CONTINENT:{found.get('continent', '')}".upper(), f"AS{found.get('asn', '')}"]
        return next((entry for entry in candidates if entry in self.block), None)

    def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        if not self.add_headers:
            return DECLINED
        notes = transaction.connection.notes
        for key, header in (("country", "Country"), ("continent", "Continent"), ("city", "City"),
                            ("asn", "ASN"), ("distance", "Distance")):
            value = notes.get(f"geoip_{key}")
            if value is not None:
                transaction.prepend_header(f"X-GeoIP-{header}", str(value))
        return DECLINED
