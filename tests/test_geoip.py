"""GeoIP/ASN lookups against small MaxMind DB files written here (GeoLite2 City and ASN
layouts, IPv4 and IPv6 ranges); no real database is used or downloaded.

The ranges are public addresses with invented answers: private, reserved and documentation
ranges are never looked up at all, so they cannot stand in for hits.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from streamapp.core.errors import ConfigError
from streamapp.core.geoip import (
    ASN_DB_VARIABLE,
    CITY_DB_VARIABLE,
    GeoLookup,
    GeoPoint,
    SourceAs,
    SourceGeo,
    open_geoip,
)

LONDON = SourceGeo(
    country_iso_code="GB",
    country_name="United Kingdom",
    city_name="London",
    location=GeoPoint(lat=51.5142, lon=-0.0931),
)
NORWAY = SourceGeo(country_iso_code="NO", country_name="Norway")
ANDREWS = SourceAs(number=20712, organization="Andrews & Arnold Ltd")
ALTIBOX = SourceAs(number=29695, organization="Altibox AS")

CITY_RECORDS: dict[str, Any] = {
    # a full GeoLite2-City record
    "81.2.69.0/24": {
        "city": {"geoname_id": 2643743, "names": {"de": "London", "en": "London"}},
        "continent": {"code": "EU", "geoname_id": 6255148, "names": {"en": "Europe"}},
        "country": {
            "geoname_id": 2635167,
            "iso_code": "GB",
            "names": {"de": "Vereinigtes Königreich", "en": "United Kingdom"},
        },
        "location": {
            "accuracy_radius": 10,
            "latitude": 51.5142,
            "longitude": -0.0931,
            "time_zone": "Europe/London",
        },
        "registered_country": {"geoname_id": 6252001, "iso_code": "US"},
        "subdivisions": [{"geoname_id": 6269131, "iso_code": "ENG", "names": {"en": "England"}}],
    },
    # country only, as for many IPv6 networks
    "2a02:cf40::/29": {"country": {"iso_code": "NO", "names": {"en": "Norway"}}},
    # parts of another shape: those parts are left out, the rest is kept
    "89.160.20.0/24": {
        "city": {"names": ["Linköping"]},
        "country": {"iso_code": "SE", "names": {"sv": "Sverige"}},
        "location": {"latitude": "58.4167", "longitude": 15.6167},
    },
    # an entry with nothing we use
    "175.16.199.0/24": {"continent": {"code": "AS"}},
}
ASN_RECORDS: dict[str, Any] = {
    "81.2.69.0/24": {
        "autonomous_system_number": 20712,
        "autonomous_system_organization": "Andrews & Arnold Ltd",
    },
    "2a02:cf40::/29": {
        "autonomous_system_number": 29695,
        "autonomous_system_organization": "Altibox AS",
    },
}


def write_mmdb(
    path: Path, database_type: str, records: dict[str, Any], *, ip_version: int = 6
) -> Path:
    writer = MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=["en"],
        description={"en": f"streamapp test {database_type}"},
    )
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


@dataclass(frozen=True)
class Databases:
    city: Path
    asn: Path
    asn_ipv4_only: Path


@pytest.fixture(scope="module")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> Databases:
    folder = tmp_path_factory.mktemp("mmdb")
    ipv4_asn = {k: v for k, v in ASN_RECORDS.items() if ":" not in k}
    return Databases(
        city=write_mmdb(folder / "city.mmdb", "GeoLite2-City", CITY_RECORDS),
        asn=write_mmdb(folder / "asn.mmdb", "GeoLite2-ASN", ASN_RECORDS),
        asn_ipv4_only=write_mmdb(folder / "asn4.mmdb", "GeoLite2-ASN", ipv4_asn, ip_version=4),
    )


@pytest.fixture
def geo(dbs: Databases) -> Iterator[GeoLookup]:
    lookup = open_geoip(str(dbs.city), str(dbs.asn))
    assert lookup is not None
    yield lookup
    lookup.close()


class CountingReader:
    """A reader that counts the lookups reaching it."""

    def __init__(self, answers: dict[str, Any] | None = None, error: Exception | None = None):
        self.answers = answers or {}
        self.error = error
        self.asked: list[str] = []
        self.closed = False

    def get(self, ip_address: str) -> Any:
        self.asked.append(ip_address)
        if self.error is not None:
            raise self.error
        return self.answers.get(ip_address)

    def close(self) -> None:
        self.closed = True


def config_error(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    """The error's message, after checking it is one line that shows no chained exception."""
    message = str(excinfo.value)
    assert "\n" not in message
    error = excinfo.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return message


# --- lookups -------------------------------------------------------------------------------


def test_public_ipv4_address_gets_country_city_location_and_network(geo: GeoLookup) -> None:
    assert geo.lookup("81.2.69.142") == (LONDON, ANDREWS)


def test_ipv6_address_gets_its_country_and_network(geo: GeoLookup) -> None:
    assert geo.lookup("2a02:cf40::1") == (NORWAY, ALTIBOX)
    assert geo.lookup("2A02:CF47:FFFF::1") == (NORWAY, ALTIBOX)  # same /29, other spelling


def test_ipv4_mapped_ipv6_address_is_looked_up_as_its_ipv4_address(geo: GeoLookup) -> None:
    assert geo.lookup("::ffff:81.2.69.142") == (LONDON, ANDREWS)


def test_public_address_without_an_entry_gives_none(geo: GeoLookup) -> None:
    assert geo.lookup("8.8.8.8") == (None, None)
    assert geo.lookup("2606:4700::1111") == (None, None)


def test_entry_with_nothing_we_use_gives_none(geo: GeoLookup) -> None:
    assert geo.lookup("175.16.199.1") == (None, None)


def test_parts_of_another_shape_are_left_out_and_the_rest_kept(geo: GeoLookup) -> None:
    # city names not a mapping, no English country name, latitude a string
    assert geo.lookup("89.160.20.112") == (SourceGeo(country_iso_code="SE"), None)


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "192.168.1.10",
        "172.16.5.4",
        "127.0.0.1",
        "169.254.1.1",
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "192.0.2.1",  # documentation
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "fe80::1%eth0",
        "fd00::1",
        "2001:db8::1",  # documentation
        "::ffff:10.0.0.1",
    ],
)
def test_private_and_reserved_addresses_are_not_looked_up(address: str) -> None:
    city, asn = CountingReader(), CountingReader()
    lookup = GeoLookup(city=city, asn=asn)
    assert lookup.lookup(address) == (None, None)
    assert city.asked == asn.asked == []
    assert lookup.stats().cached == 0


@pytest.mark.parametrize(
    "address",
    [
        "",
        "not an address",
        "81.2.69.142:443",
        "81.2.69",
        "1.2.3.4.5",
        "10.0.0.1, 81.2.69.142",
        "::g",
        "8" * 200,
        None,
        81_024_069_142,
        b"81.2.69.142",
    ],
)
def test_malformed_or_absent_address_gives_none_and_never_raises(address: Any) -> None:
    city, asn = CountingReader(), CountingReader()
    lookup = GeoLookup(city=city, asn=asn)
    assert lookup.lookup(address) == (None, None)
    assert city.asked == asn.asked == []


def test_surrounding_whitespace_is_ignored(geo: GeoLookup) -> None:
    assert geo.lookup(" 81.2.69.142\n") == (LONDON, ANDREWS)


def test_ipv6_address_in_an_ipv4_only_database_gives_none_not_an_error(dbs: Databases) -> None:
    lookup = open_geoip(None, str(dbs.asn_ipv4_only))
    assert lookup is not None
    with lookup:
        assert lookup.lookup("2a02:cf40::1") == (None, None)
        assert lookup.lookup("81.2.69.142") == (None, ANDREWS)
        assert lookup.stats().errors == 1


def test_city_database_alone_gives_geo_only(dbs: Databases) -> None:
    lookup = open_geoip(str(dbs.city), None)
    assert lookup is not None
    with lookup:
        assert lookup.lookup("81.2.69.142") == (LONDON, None)


def test_a_database_failing_mid_run_gives_none_and_is_counted() -> None:
    broken = CountingReader(error=RuntimeError("The MaxMind DB file's search tree is corrupt"))
    lookup = GeoLookup(
        city=broken, asn=CountingReader({"81.2.69.142": ASN_RECORDS["81.2.69.0/24"]})
    )
    assert lookup.lookup("81.2.69.142") == (None, ANDREWS)
    assert lookup.stats().errors == 1


# --- the cache -----------------------------------------------------------------------------


def test_repeated_address_is_answered_from_the_cache() -> None:
    city = CountingReader({"81.2.69.142": CITY_RECORDS["81.2.69.0/24"]})
    lookup = GeoLookup(city=city)
    first = lookup.lookup("81.2.69.142")
    assert lookup.lookup("81.2.69.142") == first == (LONDON, None)
    assert lookup.lookup("::ffff:81.2.69.142") == first  # the same address, other spelling
    assert city.asked == ["81.2.69.142"]
    assert lookup.stats()[:2] == (2, 1)


def test_addresses_without_an_answer_are_cached_too() -> None:
    city = CountingReader()
    lookup = GeoLookup(city=city)
    assert lookup.lookup("8.8.8.8") == lookup.lookup("8.8.8.8") == (None, None)
    assert city.asked == ["8.8.8.8"]


def test_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    city = CountingReader()
    lookup = GeoLookup(city=city, cache_size=2)
    for address in ("1.1.1.1", "8.8.8.8", "1.1.1.1", "9.9.9.9"):  # 8.8.8.8 is now the oldest
        lookup.lookup(address)
    assert lookup.stats().cached == 2
    lookup.lookup("1.1.1.1")
    lookup.lookup("8.8.8.8")
    assert city.asked == ["1.1.1.1", "8.8.8.8", "9.9.9.9", "8.8.8.8"]


def test_cache_size_zero_asks_the_database_every_time() -> None:
    city = CountingReader()
    lookup = GeoLookup(city=city, cache_size=0)
    lookup.lookup("8.8.8.8")
    lookup.lookup("8.8.8.8")
    assert city.asked == ["8.8.8.8", "8.8.8.8"]
    assert lookup.stats().cached == 0


def test_negative_cache_size_is_refused() -> None:
    with pytest.raises(ValueError):
        GeoLookup(cache_size=-1)


def test_close_closes_both_readers_and_empties_the_cache() -> None:
    city, asn = CountingReader(), CountingReader()
    lookup = GeoLookup(city=city, asn=asn)
    lookup.lookup("8.8.8.8")
    lookup.close()
    assert city.closed and asn.closed
    assert lookup.stats().cached == 0
    assert lookup.lookup("8.8.8.8") == (None, None)


# --- opening the files ---------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_no_database_configured_gives_no_lookup(empty: str | None) -> None:
    assert open_geoip(empty, empty) is None


def test_without_databases_maxminddb_is_never_imported() -> None:
    code = (
        "import sys\n"
        "import streamapp.core.ecs\n"
        "from streamapp.core.geoip import open_geoip\n"
        "assert open_geoip(None, None) is None\n"
        "assert 'maxminddb' not in sys.modules, 'maxminddb imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("variable", [CITY_DB_VARIABLE, ASN_DB_VARIABLE])
def test_missing_file_is_one_config_error_line_naming_variable_and_path(
    variable: str, tmp_path: Path, dbs: Databases
) -> None:
    missing = tmp_path / "GeoLite2.mmdb"
    paths = {CITY_DB_VARIABLE: str(dbs.city), ASN_DB_VARIABLE: str(dbs.asn), variable: str(missing)}
    with pytest.raises(ConfigError) as excinfo:
        open_geoip(paths[CITY_DB_VARIABLE], paths[ASN_DB_VARIABLE])
    assert config_error(excinfo) == (
        f"{variable}: cannot read {str(missing)!r}: No such file or directory"
    )


def corrupt_files(folder: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {
        "empty": b"",
        "text": b"this is not a database\n" * 50,
        "truncated": data[: len(data) // 3],
        # the search tree (the start of the file) overwritten, the metadata intact: the file
        # opens, and the first lookup fails
        "tree": bytes(b ^ 0xFF for b in data[:64]) + data[64:],
    }
    for name, content in files.items():
        (folder / f"{name}.mmdb").write_bytes(content)
    (folder / "folder.mmdb").mkdir()
    return {name: folder / f"{name}.mmdb" for name in [*files, "folder"]}


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "tree", "folder"])
@pytest.mark.parametrize("variable", [CITY_DB_VARIABLE, ASN_DB_VARIABLE])
def test_corrupt_file_is_one_config_error_line_naming_variable_and_path(
    kind: str, variable: str, tmp_path: Path, dbs: Databases
) -> None:
    bad = corrupt_files(tmp_path, dbs.city if variable == CITY_DB_VARIABLE else dbs.asn)[kind]
    args = (str(bad), None) if variable == CITY_DB_VARIABLE else (None, str(bad))
    with pytest.raises(ConfigError) as excinfo:
        open_geoip(*args)
    message = config_error(excinfo)
    assert message.startswith(f"{variable}: {str(bad)!r} is ")
    assert "MaxMind DB file" in message


def test_asn_database_given_as_the_city_database_is_a_config_error(dbs: Databases) -> None:
    with pytest.raises(ConfigError) as excinfo:
        open_geoip(str(dbs.asn), None)
    assert config_error(excinfo) == (
        f"{CITY_DB_VARIABLE}: {str(dbs.asn)!r} is a 'GeoLite2-ASN' database, "
        "not the layout this variable needs"
    )


def test_city_database_given_as_the_asn_database_is_a_config_error(dbs: Databases) -> None:
    with pytest.raises(ConfigError) as excinfo:
        open_geoip(str(dbs.city), str(dbs.city))
    assert config_error(excinfo).startswith(f"{ASN_DB_VARIABLE}: {str(dbs.city)!r} is a ")


def test_path_with_odd_characters_stays_on_one_line(tmp_path: Path) -> None:
    odd = tmp_path / "Geo\nLite2.mmdb"
    with pytest.raises(ConfigError) as excinfo:
        open_geoip(str(odd), None)
    assert "\\n" in config_error(excinfo)


def test_missing_maxminddb_package_is_a_config_error(
    dbs: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "maxminddb", None)  # makes `import maxminddb` fail
    with pytest.raises(ConfigError) as excinfo:
        open_geoip(None, str(dbs.asn))
    assert config_error(excinfo) == (
        f"{ASN_DB_VARIABLE}: {str(dbs.asn)!r} is set but the maxminddb package is not "
        "installed (install the 'geoip' extra)"
    )
