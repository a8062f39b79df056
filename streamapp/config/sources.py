"""The optional TOML sources file: many sources, their credentials and notification channels.

A source's own keys win over ``[defaults]``, which win over the environment's defaults.
``api_url``, ``poll_interval``, ``lookback``, ``health_check`` and ``overlap`` are checked
by the parsers of the environment variables that set their defaults (``variables.SPEC``).
Every error starts with the file's path and the key path (``sources[1].oauth.region``); every
secret-looking value of the file is registered with ``REDACTOR`` before anything is checked.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from streamapp.config.model import (
    CHANNEL_KINDS,
    DEFAULT_EVENTS_URL,
    Channel,
    ChannelKind,
    SourceConfig,
    SourceDefaults,
)
from streamapp.config.secret import secret_file, secret_text, secret_url
from streamapp.config.spec import Parser, api_url, pattern, short_name, string, type_name
from streamapp.config.variables import SPEC
from streamapp.core.credentials import DEFAULT_TOKEN_URL, ApiKey, OAuthClient
from streamapp.core.durations import format_duration
from streamapp.core.errors import ConfigError
from streamapp.core.redact import REDACTOR, Secret

#: the per-source settings, with the parsers of the variables that set their defaults
_SETTINGS: dict[str, Parser[Any]] = {s.attr: s.parser for s in SPEC if s.group == "source"}
_DEFAULTS_KEYS = frozenset({*_SETTINGS, "notifications"})
_SOURCE_KEYS = frozenset({"name", "token", "token_file", "oauth", *_DEFAULTS_KEYS})
_OAUTH_KEYS = frozenset(
    {"client_id", "client_secret", "client_secret_file", "subdomain", "region", "token_url"}
)
_CHANNEL_KEYS: dict[str, frozenset[str]] = {
    "webhook": frozenset({"type", "name", "url"}),
    "slack": frozenset({"type", "name", "url"}),
    "pagerduty": frozenset({"type", "name", "routing_key", "routing_key_file", "events_url"}),
}
_SECRET_KEYS = ("token", "client_secret", "url", "routing_key")
_subdomain = pattern(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
    "the account subdomain (the 'acme' of acme.pagerduty.com)",
)


class _FileContext:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)
        self.base = path.parent

    def at(self, key_path: str) -> str:
        return f"{self.label}: {key_path}"


# --------------------------------------------------------------------------- entry points


def load_sources_file(path: str | Path, *, defaults: SourceDefaults) -> tuple[SourceConfig, ...]:
    """Read the TOML sources file; ``defaults`` fill what neither a source nor [defaults] sets."""
    ctx = _FileContext(Path(path))
    return _read_sources(ctx, defaults, f"{ctx.label}: cannot read the sources file")


def read_sources_variable(
    variable: str, value: str, defaults: SourceDefaults
) -> tuple[SourceConfig, ...]:
    """The sources of the file the environment ``variable`` names (``~`` expanded)."""
    ctx = _FileContext(Path(value).expanduser())
    return _read_sources(ctx, defaults, f"{variable}: cannot read {ctx.label!r}")


def _read_sources(
    ctx: _FileContext, defaults: SourceDefaults, cannot_read: str
) -> tuple[SourceConfig, ...]:
    """The sources of ``ctx``'s file; ``cannot_read``, then the OS's reason, when it fails."""
    try:
        data = ctx.path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{cannot_read}: {reason}") from None
    return _parse_sources(data, ctx, defaults)


def check_poll_vs_health(source: SourceConfig, what: str, poll_label: str) -> None:
    """A source must be polled more often than its health check expects a record."""
    if source.health_check <= source.poll_interval:
        raise ConfigError(
            f"{what}: must be longer than {poll_label} "
            f"({format_duration(source.poll_interval)}), "
            f"got {format_duration(source.health_check)}"
        )


# --------------------------------------------------------------------------- the document


def _parse_sources(
    data: bytes, ctx: _FileContext, defaults: SourceDefaults
) -> tuple[SourceConfig, ...]:
    doc = _toml(data, ctx)
    _register_secrets(doc)
    _check_keys(doc, frozenset({"defaults", "sources"}), ctx.label)
    if "defaults" in doc:
        defaults = _apply_defaults(_table(doc["defaults"], ctx.at("defaults")), ctx, defaults)
    if "sources" not in doc:
        raise ConfigError(f"{ctx.label}: no [[sources]] declared")
    raw_sources = _array_of_tables(doc["sources"], ctx.at("sources"))
    if not raw_sources:
        raise ConfigError(f"{ctx.label}: no [[sources]] declared")

    sources: list[SourceConfig] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(raw_sources):
        source = _source(raw, index, ctx, defaults)
        if source.name in first_index:
            raise ConfigError(
                f"{ctx.label}: duplicate source name {source.name!r} "
                f"(sources[{first_index[source.name]}] and sources[{index}])"
            )
        first_index[source.name] = index
        sources.append(source)
    return tuple(sources)


def _toml(data: bytes, ctx: _FileContext) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{ctx.label}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages name the line and column, never the offending value
        raise ConfigError(f"{ctx.label}: invalid TOML: {REDACTOR.scrub(str(exc))}") from None


def _register_secrets(doc: object) -> None:
    """Register every secret-looking value of the file before validating anything."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in _SECRET_KEYS and isinstance(value, str):
                REDACTOR.add(value.strip())
            else:
                _register_secrets(value)
    elif isinstance(doc, list):
        for item in doc:
            _register_secrets(item)


def _check_keys(table: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        listing = ", ".join(sorted(allowed))
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {listing})")


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {type_name(value)}")
    return value


def _array_of_tables(value: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{where}: expected an array of tables ([[...]]), got {type_name(value)}")
    return value


def _nonblank(value: object, where: str) -> str:
    if not string(value, where).strip():
        raise ConfigError(f"{where}: is empty")
    return string(value, where).strip()


def _secret_value(table: dict[str, Any], key: str, ctx: _FileContext, where: str) -> Secret:
    """``key`` or ``key_file`` (exactly one) from ``table``."""
    file_key = f"{key}_file"
    if key in table and file_key in table:
        raise ConfigError(ctx.at(f"{where}: set either {key} or {file_key}, not both"))
    if key in table:
        return secret_text(string(table[key], ctx.at(f"{where}.{key}")), ctx.at(f"{where}.{key}"))
    if file_key in table:
        return secret_file(table[file_key], ctx.at(f"{where}.{file_key}"), ctx.base)
    raise ConfigError(ctx.at(f"{where}: missing {key} (or {file_key})"))


# --------------------------------------------------------------------------- sources


def _apply_defaults(
    table: dict[str, Any], ctx: _FileContext, base: SourceDefaults
) -> SourceDefaults:
    where = "defaults"
    _check_keys(table, _DEFAULTS_KEYS, ctx.at(where))
    changes = _settings(table, ctx, where)
    if "notifications" in table:
        changes["channels"] = _channels(table["notifications"], ctx, f"{where}.notifications")
    return replace(base, **changes)


def _settings(table: dict[str, Any], ctx: _FileContext, where: str) -> dict[str, Any]:
    """The per-source settings ``table`` names, parsed."""
    return {
        key: parse(table[key], ctx.at(f"{where}.{key}"))
        for key, parse in _SETTINGS.items()
        if key in table
    }


def _source(
    raw: dict[str, Any], index: int, ctx: _FileContext, defaults: SourceDefaults
) -> SourceConfig:
    where = f"sources[{index}]"
    _check_keys(raw, _SOURCE_KEYS, ctx.at(where))
    if "name" not in raw:
        raise ConfigError(ctx.at(f"{where}: missing name"))
    name = short_name(raw["name"], ctx.at(f"{where}.name"))
    values = {key: getattr(defaults, key) for key in _SETTINGS} | _settings(raw, ctx, where)
    credentials = _credentials(raw, ctx, where, values["api_url"])
    channels = (
        _channels(raw["notifications"], ctx, f"{where}.notifications")
        if "notifications" in raw
        else defaults.channels
    )
    source = SourceConfig(name=name, credentials=credentials, channels=channels, **values)
    check_poll_vs_health(source, ctx.at(f"{where}.health_check"), "poll_interval")
    return source


def _credentials(
    raw: dict[str, Any], ctx: _FileContext, where: str, source_api_url: str
) -> ApiKey | OAuthClient:
    given = [key for key in ("token", "token_file", "oauth") if key in raw]
    if len(given) != 1:
        problem = "missing" if not given else "more than one of"
        raise ConfigError(
            ctx.at(f"{where}: {problem} token, token_file or [oauth] (exactly one is required)")
        )
    if given[0] == "oauth":
        return _oauth(raw["oauth"], ctx, f"{where}.oauth", source_api_url)
    return ApiKey(_secret_value(raw, "token", ctx, where))


# --------------------------------------------------------------------------- oauth


def _region_for(source_api_url: str) -> Literal["us", "eu"]:
    host = urlsplit(source_api_url).hostname or ""
    return "eu" if host == "eu.pagerduty.com" or host.endswith(".eu.pagerduty.com") else "us"


def _oauth(value: object, ctx: _FileContext, where: str, source_api_url: str) -> OAuthClient:
    table = _table(value, ctx.at(where))
    _check_keys(table, _OAUTH_KEYS, ctx.at(where))
    for key in ("client_id", "subdomain"):
        if key not in table:
            raise ConfigError(ctx.at(f"{where}: missing {key}"))
    client_id = _nonblank(table["client_id"], ctx.at(f"{where}.client_id"))
    client_secret = _secret_value(table, "client_secret", ctx, where)
    subdomain = _subdomain(
        _nonblank(table["subdomain"], ctx.at(f"{where}.subdomain")),
        ctx.at(f"{where}.subdomain"),
    )
    region = _region(table, ctx, where, source_api_url)
    token_url = (
        api_url(table["token_url"], ctx.at(f"{where}.token_url"))
        if "token_url" in table
        else DEFAULT_TOKEN_URL
    )
    return OAuthClient(
        client_id=client_id,
        client_secret=client_secret,
        subdomain=subdomain,
        region=region,
        token_url=token_url,
    )


def _region(
    table: dict[str, Any], ctx: _FileContext, where: str, source_api_url: str
) -> Literal["us", "eu"]:
    """The explicit ``region``, or the one the source's API URL implies."""
    if "region" not in table:
        return _region_for(source_api_url)
    region = table["region"]
    if region not in ("us", "eu"):
        shown = repr(region) if isinstance(region, str) else type_name(region)
        raise ConfigError(ctx.at(f'{where}.region: expected "us" or "eu", got {shown}'))
    return cast(Literal["us", "eu"], region)


# --------------------------------------------------------------------------- channels


def _channels(value: object, ctx: _FileContext, where: str) -> tuple[Channel, ...]:
    channels: list[Channel] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(_array_of_tables(value, ctx.at(where))):
        here = f"{where}[{index}]"
        kind = _channel_kind(raw, ctx, here)
        _check_keys(raw, _CHANNEL_KEYS[kind], ctx.at(here))
        name = (
            short_name(raw["name"], ctx.at(f"{here}.name")) if "name" in raw else f"{kind}-{index}"
        )
        if name in seen:
            raise ConfigError(
                ctx.at(
                    f"{where}: duplicate channel name {name!r} ({where}[{seen[name]}] and {here})"
                )
            )
        seen[name] = index
        channels.append(_channel(raw, kind, name, ctx, here))
    return tuple(channels)


def _channel(
    raw: dict[str, Any], kind: ChannelKind, name: str, ctx: _FileContext, here: str
) -> Channel:
    if kind == "pagerduty":
        routing_key = _secret_value(raw, "routing_key", ctx, here)
        events_url = (
            api_url(raw["events_url"], ctx.at(f"{here}.events_url"))
            if "events_url" in raw
            else DEFAULT_EVENTS_URL
        )
        return Channel(kind=kind, name=name, routing_key=routing_key, events_url=events_url)
    if "url" not in raw:
        raise ConfigError(ctx.at(f"{here}: missing url"))
    return Channel(kind=kind, name=name, url=secret_url(raw["url"], ctx.at(f"{here}.url")))


def _channel_kind(raw: dict[str, Any], ctx: _FileContext, here: str) -> ChannelKind:
    if "type" not in raw:
        raise ConfigError(ctx.at(f"{here}: missing type (webhook, slack or pagerduty)"))
    kind = raw["type"]
    if kind not in CHANNEL_KINDS:
        shown = repr(kind) if isinstance(kind, str) else type_name(kind)
        raise ConfigError(ctx.at(f"{here}.type: expected webhook, slack or pagerduty, got {shown}"))
    return cast(ChannelKind, kind)
