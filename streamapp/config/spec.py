"""How a setting is declared, and the parsers that check its values.

A ``Setting`` is one environment variable, declared once: its name, its default as an
operator would write it (``"24h"``, ``"16MiB"``, ``"auto"``), the parser that checks it
(bounds included), what it means, and where its value lands in ``Settings``. The default is
run through the setting's own parser when the spec is built, so the README's default and the
value cannot disagree, and a default outside its own bounds fails at import.
``variables.SPEC`` lists every setting; ``env`` turns it into ``Settings``.

A parser is a ``(value, what) -> value`` function. ``what`` names the variable (or the file
and key) at the start of the one-line ``ConfigError`` it raises. Parsers take ``object``
because the TOML sources file hands them integers and booleans too; the environment always
hands them text stripped of surrounding whitespace, never blank (blank means unset).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlsplit

from streamapp.core.durations import format_duration, parse_duration
from streamapp.core.errors import ConfigError
from streamapp.core.redact import REDACTOR
from streamapp.core.urls import check_api_url

T = TypeVar("T")
N = TypeVar("N", int, float)
Parser: TypeAlias = Callable[[object, str], T]


@dataclass(frozen=True, kw_only=True)
class Setting:
    """One environment variable: everything the app, its errors and the README know of it."""

    #: the environment variable
    name: str
    #: checks the text and turns it into the value (raises a one-line ConfigError)
    parser: Parser[Any]
    #: the default as an operator writes it (shown in the README, parsed for the value);
    #: None: unset, the value is None
    default: str | None
    #: the README's description
    meaning: str
    #: where the value lands: "http_timeout" (a Settings field), "topics.raw",
    #: "source.lookback" (SourceDefaults), "kafka_security.protocol"; None: env.py reads it
    into: str | None = None
    #: the README's default column when ``default`` is None
    unset: str = "—"
    #: registered with the redactor before any variable is parsed
    secret: bool = False
    #: the variable this one replaces (``X_FILE`` for ``X``): setting both is an error
    instead_of: str | None = None
    #: the parsed default
    value: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        value = None if self.default is None else self.parser(self.default, self.name)
        object.__setattr__(self, "value", value)

    @property
    def shown(self) -> str:
        """The default as the README shows it."""
        return self.unset if self.default is None else f"`{self.default}`"

    @property
    def group(self) -> str | None:
        """``topics`` for ``topics.raw``; ``""`` for a field of Settings itself; None: none."""
        return None if self.into is None else self.into.rpartition(".")[0]

    @property
    def attr(self) -> str:
        """``raw`` for ``topics.raw``."""
        return (self.into or "").rpartition(".")[2]

    def read(self, env: Mapping[str, str]) -> Any:
        """The parsed value from ``env``, or the default when unset or blank."""
        text = env.get(self.name, "").strip()
        return self.parser(text, self.name) if text else self.value


# --------------------------------------------------------------------------- helpers


def type_name(value: object) -> str:
    """How an error names a TOML value's type."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def string(value: object, what: str) -> str:
    """``value`` itself when it is a string (kept as is); otherwise a ConfigError."""
    if not isinstance(value, str):
        raise ConfigError(f"{what}: expected a string, got {type_name(value)}")
    return value


def _or_list(options: tuple[str, ...]) -> str:
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


# --------------------------------------------------------------------------- numbers


def _bounded(
    kind: type[N], expected: str, low: N, high: N, out_of_range: Callable[[object, N], str]
) -> Parser[N]:
    """A ``kind`` from ``low`` to ``high`` (inclusive), given as text or a number (never a
    bool, nor a float for an int); ``out_of_range(value, number)`` words a number outside."""

    def parse(value: object, what: str) -> N:
        if (
            isinstance(value, bool)
            or not isinstance(value, str | int | float)
            or (kind is int and isinstance(value, float))
        ):
            raise ConfigError(f"{what}: expected {expected}, got {type_name(value)}")
        try:
            number = kind(value)
        except ValueError:
            raise ConfigError(f"{what}: expected {expected}, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"{what}: {out_of_range(value, number)}")
        return number

    return parse


def integer(low: int, high: int) -> Parser[int]:
    """A whole number from ``low`` to ``high`` (inclusive)."""
    return _bounded(
        int, "an integer", low, high, lambda _, n: f"must be between {low} and {high}, got {n}"
    )


def integer_or_auto(low: int, high: int) -> Parser[int | None]:
    """``auto`` (None: the code decides), or a whole number from ``low`` to ``high``."""
    number = integer(low, high)

    def parse(value: object, what: str) -> int | None:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return None
        return number(value, what)

    return parse


def seconds(low: float, high: float) -> Parser[float]:
    """A number of seconds from ``low`` to ``high`` (inclusive), fractions allowed."""
    return _bounded(
        float,
        "a number of seconds",
        low,
        high,
        lambda value, _: f"expected {low:g} to {high:g} seconds, got {value!r}",
    )


_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_BYTES_RE = re.compile(r"^(\d+)\s*([a-z]*)$", re.IGNORECASE)


def format_bytes(size: int) -> str:
    """The shortest exact binary spelling of ``size``: ``16MiB``, ``1536KiB``, ``100B``."""
    for unit in ("GiB", "MiB", "KiB"):
        step = _BYTE_UNITS[unit.lower()]
        if size >= step and size % step == 0:
            return f"{size // step}{unit}"
    return f"{size}B"


def byte_size(low: int, high: int) -> Parser[int]:
    """A number of bytes (``16MiB``, ``512KiB``, ``1GB``, plain ``1048576``), within bounds."""

    def parse(value: object, what: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        else:
            match = _BYTES_RE.match(value) if isinstance(value, str) else None
            unit = match.group(2).lower() if match else ""
            if match is None or unit not in _BYTE_UNITS:
                shown = repr(value) if isinstance(value, str) else type_name(value)
                raise ConfigError(f"{what}: expected a size such as 512KiB or 16MiB, got {shown}")
            size = int(match.group(1)) * _BYTE_UNITS[unit]
        if not low <= size <= high:
            raise ConfigError(
                f"{what}: must be between {format_bytes(low)} and {format_bytes(high)}, "
                f"got {value!r}"
            )
        return size

    return parse


# --------------------------------------------------------------------------- durations

_DURATION_HINT = "expected a duration such as 30s, 90m, 24h or 7d"
_ZERO_RE = re.compile(r"^\s*0+(?:\.0+)?\s*[smhd]?\s*$")


def _is_zero(value: str | int | float) -> bool:
    if isinstance(value, str):
        return _ZERO_RE.match(value) is not None
    return value == 0


def duration(
    *,
    minimum: timedelta | None = None,
    maximum: timedelta | None = None,
    below: timedelta | None = None,
    zero: bool = False,
) -> Parser[timedelta]:
    """A duration (``30s``, ``90m``, ``24h``, ``7d``) or a number of seconds, within bounds.

    ``maximum`` is inclusive, ``below`` exclusive; ``zero`` also accepts ``0`` (none).
    """

    def parse(value: object, what: str) -> timedelta:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{what}: {_DURATION_HINT}, got {type_name(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{what}: {_DURATION_HINT}, got {value!r}")
        if zero and _is_zero(value):
            return timedelta(0)
        try:
            delta = parse_duration(value, what=what)
        except OverflowError:
            raise ConfigError(f"{what}: duration too large, got {value!r}") from None
        if minimum is not None and delta < minimum:
            raise ConfigError(f"{what}: must be at least {format_duration(minimum)}, got {value!r}")
        if maximum is not None and delta > maximum:
            raise ConfigError(f"{what}: must be at most {format_duration(maximum)}, got {value!r}")
        if below is not None and delta >= below:
            raise ConfigError(f"{what}: must be less than {format_duration(below)}, got {value!r}")
        return delta

    return parse


# --------------------------------------------------------------------------- words


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def boolean(value: object, what: str) -> bool:
    """``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off`` (any case)."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{what}: expected true or false (1/0, yes/no), got {value!r}")


def choice(*options: str, fold: Callable[[str], str] = str.lower) -> Parser[str]:
    """One of ``options``, compared after ``fold`` (lower case by default)."""

    def parse(value: object, what: str) -> str:
        folded = fold(string(value, what))
        if folded not in options:
            raise ConfigError(f"{what}: expected {_or_list(options)}, got {value!r}")
        return folded

    return parse


def pattern(regex: str, hint: str) -> Parser[str]:
    """A string ``regex`` matches (anchor it); ``hint`` says what that is in words."""
    compiled = re.compile(regex)

    def parse(value: object, what: str) -> str:
        text = string(value, what)
        if not compiled.match(text):
            raise ConfigError(f"{what}: expected {hint}, got {value!r}")
        return text

    return parse


#: a source's or a channel's name
short_name = pattern(r"^[A-Za-z0-9._-]{1,64}$", "1-64 letters, digits, '.', '_' or '-'")

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def topic(value: object, what: str) -> str:
    """A Kafka topic name."""
    text = string(value, what)
    if not _TOPIC_RE.match(text) or text in (".", ".."):
        raise ConfigError(
            f"{what}: a Kafka topic name is 1-249 letters, digits, '.', '_' or '-', got {text!r}"
        )
    return text


def printable(value: object, what: str) -> str:
    """Free text without control characters."""
    text = string(value, what)
    if not text.isprintable():
        raise ConfigError(f"{what}: contains control characters")
    return text


_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def host(value: object, what: str) -> str:
    """An IP address (``127.0.0.1``, ``::``) or a host name (``localhost``, ``web.internal``)."""
    text = string(value, what)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    labels = text.removesuffix(".").split(".")
    if len(text) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise ConfigError(f"{what}: expected an IP address or a host name, got {text!r}")
    return text


# --------------------------------------------------------------------------- places


def path(value: object, what: str) -> str:
    """A filesystem path, kept as written (whoever uses it says what it must be)."""
    return string(value, what)


def readable_file(value: object, what: str) -> str:
    """An existing file; ``~`` is expanded."""
    text = string(value, what)
    expanded = Path(text).expanduser()
    if not expanded.is_file():
        raise ConfigError(f"{what}: {text!r} is not a readable file")
    return str(expanded)


def api_url(value: object, what: str) -> str:
    """An https:// base URL (plain http:// only for loopback hosts), without trailing slash."""
    text = string(value, what)
    try:
        return check_api_url(text.strip())
    except ValueError as exc:
        raise ConfigError(f"{what}: {REDACTOR.scrub(str(exc))}") from None


def broker_urls(value: object, what: str) -> str:
    """faust broker URLs: ``kafka://host:port``, comma- or semicolon-separated.

    Items after the first may leave out the scheme (they take the previous one).
    """
    text = string(value, what)
    items = [item.strip() for item in text.replace(";", ",").split(",")]
    if any(not item for item in items):
        raise ConfigError(f"{what}: empty entry in the broker list {text!r}")
    urls: list[str] = []
    scheme: str | None = None
    for item in items:
        scheme, url = _broker_url(item, scheme, what)
        urls.append(url)
    return ",".join(urls)


def _broker_url(item: str, scheme: str | None, what: str) -> tuple[str, str]:
    """(the scheme the next item inherits, this item as a URL)."""
    if "@" in item:  # never echo what may be a password
        raise ConfigError(f"{what}: credentials in the broker URL are not supported")
    if "://" in item:
        item_scheme, _, rest = item.partition("://")
        item_scheme = item_scheme.lower()
        if item_scheme not in ("kafka", "aiokafka"):
            raise ConfigError(
                f"{what}: expected kafka://host:port or aiokafka://host:port, got {item!r}"
            )
        scheme = scheme or item_scheme
    elif scheme is None:
        raise ConfigError(f"{what}: expected kafka://host:port, got {item!r}")
    else:
        item_scheme, rest = scheme, item
    if not _is_host_and_port(f"{item_scheme}://{rest}"):
        raise ConfigError(f"{what}: expected host:port after the scheme, got {item!r}")
    return scheme, f"{item_scheme}://{rest.rstrip('/')}"


def _is_host_and_port(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return False
    return bool(
        host
        and port is not None
        and 0 < port < 65536
        and parts.path in ("", "/")
        and not (parts.query or parts.fragment or parts.username or parts.password)
    )
