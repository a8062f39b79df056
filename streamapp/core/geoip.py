"""Where a record's source address is: country, city and network, from MaxMind-format files.

The operator opts in by pointing ``STREAMAPP_GEOIP_DB`` at a City database
(GeoLite2-City.mmdb, GeoIP2-City.mmdb, or any MMDB with that layout) and, independently,
``STREAMAPP_ASN_DB`` at an ASN database (GeoLite2-ASN layout). Nothing is downloaded: the
operator keeps the files current (a restart picks up a new file).

- :func:`open_geoip` opens the configured files and turns a missing, unreadable or invalid
  file into one :class:`~streamapp.core.errors.ConfigError` line naming the variable and
  the path. ``maxminddb`` is imported there and only there, so a deployment without
  databases neither needs the package nor pays for importing it.
- :meth:`GeoLookup.lookup` never raises: a malformed, private, reserved or absent address,
  an address a database has no entry for, or a database that fails mid-run gives ``None``.
  Answers for recent addresses are kept in a bounded LRU cache (a burst of records from
  one request shares one address).

:class:`SourceGeo` uses the names of ECS's ``source.geo.*`` fields, so the ECS rendering
can carry it as it is; :class:`SourceAs` is flat (ECS nests ``as.organization.name``).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol

import msgspec

from streamapp.core.errors import ConfigError

__all__ = [
    "ASN_DB_VARIABLE",
    "CITY_DB_VARIABLE",
    "GeoLookup",
    "GeoPoint",
    "GeoStats",
    "SourceAs",
    "SourceGeo",
    "open_geoip",
]

CITY_DB_VARIABLE: Final = "STREAMAPP_GEOIP_DB"
ASN_DB_VARIABLE: Final = "STREAMAPP_ASN_DB"
DEFAULT_CACHE_SIZE: Final = 4096
#: the language of the place names we keep (every MaxMind database has English names)
LANGUAGE: Final = "en"

#: longer than any textual IPv6 address with a scope: not worth parsing
_MAX_ADDRESS_LENGTH: Final = 64
#: looked up once when a file is opened, so a corrupt search tree fails at start, not later
_PROBE: Final = "1.1.1.1"


class GeoPoint(msgspec.Struct, kw_only=True, frozen=True):
    """A location in degrees (ECS ``geo_point`` as an object)."""

    lat: float
    lon: float


class SourceGeo(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Where an address is, per the City database; each part only when the database has it."""

    country_iso_code: str | None = None
    country_name: str | None = None
    city_name: str | None = None
    location: GeoPoint | None = None


class SourceAs(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The autonomous system that announces an address, per the ASN database."""

    number: int | None = None
    organization: str | None = None


class GeoStats(NamedTuple):
    hits: int
    misses: int
    #: lookups a database failed (a file corrupted or replaced while open)
    errors: int
    cached: int


class Reader(Protocol):
    """What we use of ``maxminddb.Reader`` (tests may hand in their own)."""

    def get(self, ip_address: str) -> Any: ...

    def close(self) -> None: ...


Answer = tuple[SourceGeo | None, SourceAs | None]
_NOTHING: Final[Answer] = (None, None)

#: what a reader raises on a lookup it cannot answer: ValueError for an IPv6 address in an
#: IPv4-only file, RuntimeError (maxminddb.InvalidDatabaseError) for a corrupt file
_LOOKUP_ERRORS: Final = (ValueError, TypeError, RuntimeError, OSError)


class GeoLookup:
    """Country, city and network of public addresses, from one or two open databases."""

    def __init__(
        self,
        *,
        city: Reader | None = None,
        asn: Reader | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        self._city = city
        self._asn = asn
        self._cache_size = cache_size
        self._cache: OrderedDict[str, Answer] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._errors = 0

    def lookup(self, ip: str | None) -> Answer:
        """``(geo, as)`` for one address; each ``None`` when unknown. Never raises."""
        key = _public_address(ip)
        if key is None:
            return _NOTHING
        answer = self._cache.get(key)
        if answer is not None:
            self._hits += 1
            self._cache.move_to_end(key)
            return answer
        self._misses += 1
        answer = (_geo(self._get(self._city, key)), _as(self._get(self._asn, key)))
        if self._cache_size:
            self._cache[key] = answer
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return answer

    def stats(self) -> GeoStats:
        return GeoStats(self._hits, self._misses, self._errors, len(self._cache))

    def close(self) -> None:
        for reader in (self._city, self._asn):
            if reader is not None:
                reader.close()
        self._city = self._asn = None
        self._cache.clear()

    def __enter__(self) -> GeoLookup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, reader: Reader | None, key: str) -> Any:
        if reader is None:
            return None
        try:
            return reader.get(key)
        except _LOOKUP_ERRORS:
            self._errors += 1
            return None


def open_geoip(
    city_db: str | None,
    asn_db: str | None = None,
    *,
    cache_size: int = DEFAULT_CACHE_SIZE,
) -> GeoLookup | None:
    """The lookup for the configured files (``STREAMAPP_GEOIP_DB``, ``STREAMAPP_ASN_DB``),
    or ``None`` when neither is set. Either may be set alone. A file we cannot use raises
    one :class:`ConfigError` line naming its variable and path."""
    city_db = city_db.strip() if city_db else None
    asn_db = asn_db.strip() if asn_db else None
    if not city_db and not asn_db:
        return None
    city = _open(city_db, CITY_DB_VARIABLE, wrong_kinds=("asn",)) if city_db else None
    try:
        asn = _open(asn_db, ASN_DB_VARIABLE, wrong_kinds=("city", "country")) if asn_db else None
    except ConfigError:
        if city is not None:
            city.close()
        raise
    return GeoLookup(city=city, asn=asn, cache_size=cache_size)


def _open(path_text: str, variable: str, *, wrong_kinds: tuple[str, ...]) -> Reader:
    path = Path(path_text).expanduser()
    where = f"{variable}: {str(path)!r}"
    try:
        import maxminddb  # only here: a deployment without databases never imports it
    except ImportError:
        raise ConfigError(
            f"{where} is set but the maxminddb package is not installed (install the 'geoip' extra)"
        ) from None
    if path.is_dir():
        raise ConfigError(f"{where} is a directory, not a MaxMind DB file")
    try:
        reader = maxminddb.open_database(str(path))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{variable}: cannot read {str(path)!r}: {reason}") from None
    except (maxminddb.InvalidDatabaseError, ValueError):
        raise ConfigError(f"{where} is not a MaxMind DB file") from None
    try:
        kind = str(reader.metadata().database_type)
        reader.get(_PROBE)
    except _LOOKUP_ERRORS:
        reader.close()
        raise ConfigError(f"{where} is a corrupt MaxMind DB file") from None
    if any(word in kind.lower() for word in wrong_kinds):
        reader.close()
        raise ConfigError(f"{where} is a {kind!r} database, not the layout this variable needs")
    return reader


# --- reading the answers -----------------------------------------------------------------


def _public_address(ip: object) -> str | None:
    """The address in canonical text, or ``None`` when it is malformed or not public
    (private, loopback, link-local, documentation, shared, reserved: no database places
    those). An IPv4-mapped IPv6 address is looked up as the IPv4 address it carries."""
    if not isinstance(ip, str) or not ip or len(ip) > _MAX_ADDRESS_LENGTH:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address) if address.is_global else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _name(place: dict[str, Any]) -> str | None:
    return _text(_dict(place.get("names")).get(LANGUAGE))


def _degrees(value: Any, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if -limit <= value <= limit else None  # NaN fails both comparisons


def _geo(record: Any) -> SourceGeo | None:
    """A City record (GeoLite2-City layout) → SourceGeo; a part of another shape is left out."""
    if not isinstance(record, dict):
        return None
    country = _dict(record.get("country"))
    location = _dict(record.get("location"))
    lat = _degrees(location.get("latitude"), 90.0)
    lon = _degrees(location.get("longitude"), 180.0)
    geo = SourceGeo(
        country_iso_code=_text(country.get("iso_code")),
        country_name=_name(country),
        city_name=_name(_dict(record.get("city"))),
        location=GeoPoint(lat=lat, lon=lon) if lat is not None and lon is not None else None,
    )
    return None if geo == SourceGeo() else geo


def _as(record: Any) -> SourceAs | None:
    """An ASN record (GeoLite2-ASN layout) → SourceAs."""
    if not isinstance(record, dict):
        return None
    number = record.get("autonomous_system_number")
    answer = SourceAs(
        number=number if isinstance(number, int) and not isinstance(number, bool) else None,
        organization=_text(record.get("autonomous_system_organization")),
    )
    return None if answer == SourceAs() else answer
