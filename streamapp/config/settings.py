"""Configuration: environment variables and the optional TOML sources file.

Pure loading and validation (no faust, no Kafka). Every failure is one ``ConfigError`` line
naming the variable, or the file and key path; a token, client secret, channel URL or
routing key never appears in it. Every secret loaded is wrapped in ``Secret`` at once and
registered with ``REDACTOR``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from streamapp.config.security import KafkaSecurity, SaslMechanism, SecurityProtocol
from streamapp.core.durations import format_duration, parse_duration
from streamapp.core.errors import ConfigError
from streamapp.core.redact import REDACTOR, Secret
from streamapp.core.routing import Router, load_rules
from streamapp.pagerduty.credentials import DEFAULT_TOKEN_URL, ApiKey, OAuthClient
from streamapp.pagerduty.urls import US_API_URL, check_api_url, is_loopback_host

__all__ = [
    "DEFAULT_EVENTS_URL",
    "SETTINGS_TABLE",
    "Channel",
    "Settings",
    "SourceConfig",
    "SourceDefaults",
    "Topics",
    "load_settings",
    "load_sources_file",
    "unknown_variables",
]

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

MAX_LOOKBACK = timedelta(days=365)
MIN_POLL_INTERVAL = timedelta(seconds=1)
MAX_OVERLAP = timedelta(days=31)  # exclusive

ChannelKind = Literal["webhook", "slack", "pagerduty"]
CHANNEL_KINDS: tuple[ChannelKind, ...] = ("webhook", "slack", "pagerduty")
LOG_LEVELS = ("debug", "info", "warning", "error")
STORES = ("memory://", "rocksdb://")

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_APP_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_SUBDOMAIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_ZERO_RE = re.compile(r"^\s*0+(?:\.0+)?\s*[smhd]?\s*$")
_DURATION_HINT = "expected a duration such as 30s, 90m, 24h or 7d"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Channel:
    """Where a source's health alerts are also delivered, besides the notifications topic."""

    kind: ChannelKind
    name: str
    url: Secret | None = None
    routing_key: Secret | None = None
    events_url: str = DEFAULT_EVENTS_URL


@dataclass(frozen=True)
class SourceConfig:
    name: str
    credentials: ApiKey | OAuthClient
    api_url: str
    poll_interval: timedelta
    lookback: timedelta
    health_check: timedelta
    overlap: timedelta
    channels: tuple[Channel, ...] = ()


@dataclass(frozen=True)
class SourceDefaults:
    """What a source gets for every setting it does not name (environment, then [defaults])."""

    api_url: str = US_API_URL
    poll_interval: timedelta = timedelta(seconds=60)
    lookback: timedelta = timedelta(hours=24)
    health_check: timedelta = timedelta(days=1)
    overlap: timedelta = timedelta(minutes=5)
    channels: tuple[Channel, ...] = ()


@dataclass(frozen=True)
class Topics:
    raw: str = "pagerduty_audit_logs_raw"
    output: str = "pagerduty_audit_logs"
    notifications: str = "notifications"
    dlq: str = "pagerduty_audit_logs_dlq"
    ocsf: str = "pagerduty_audit_logs.ocsf"


@dataclass(frozen=True)
class Settings:
    broker: str | None
    sources: tuple[SourceConfig, ...]
    topics: Topics
    app_id: str
    partitions: int
    store: str
    data_dir: str
    web_port: int
    log_level: str
    log_json: bool
    #: consumer-group session timeout: how long a dead worker keeps its sources and partitions
    session_timeout: float = 10.0
    #: seconds one PagerDuty request may take before it counts as a timeout
    http_timeout: float = 30.0
    #: attempts per PagerDuty request before a poll gives up (its checkpoint stays put)
    http_retry_attempts: int = 6
    #: first backoff step of the capped, jittered exponential backoff
    http_retry_base: float = 0.5
    #: how long a record id is remembered for dedupe
    dedupe_retention: timedelta = timedelta(days=7)
    #: routing rules (TOML) sending matching records to extra topics; None = main topic only
    routes_file: str | None = None
    router: Router = field(default_factory=lambda: Router())
    #: also render each record as OCSF onto ``topics.ocsf``
    ocsf: bool = False
    #: faust's check that recovered table offsets do not exceed the changelog's end
    recovery_consistency_check: bool = True
    #: how the worker and the CLI's own clients authenticate to Kafka
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)


#: (variable, default as shown to humans, meaning) for every variable load_settings reads
SETTINGS_TABLE: list[tuple[str, str, str]] = [
    (
        "KAFKA_BROKER",
        "embedded broker (make run only)",
        "faust broker URL(s), `kafka://host:port` (comma-separated for several; "
        "`aiokafka://` also accepted)",
    ),
    ("PAGERDUTY_API_TOKEN", "—", "API key for the single-source shortcut"),
    (
        "PAGERDUTY_API_TOKEN_FILE",
        "—",
        "file holding the API key for the single-source shortcut (instead of "
        "`PAGERDUTY_API_TOKEN`; surrounding whitespace is stripped)",
    ),
    (
        "PAGERDUTY_API_URL",
        "`https://api.pagerduty.com`",
        "EU: `https://api.eu.pagerduty.com`; plain `http://` is accepted only for loopback hosts",
    ),
    (
        "PAGERDUTY_SOURCE_NAME",
        "`pagerduty`",
        "the source's name, carried on every output record (1-64 letters, digits, `.`, `_`, `-`)",
    ),
    ("PAGERDUTY_POLL_INTERVAL", "`60`", "seconds between polls (or a duration; at least `1s`)"),
    (
        "PAGERDUTY_LOOKBACK",
        "`24h`",
        "how far back the first poll of a new source reaches "
        "(`30s`, `90m`, `24h`, `7d`, up to `365d`)",
    ),
    (
        "PAGERDUTY_HEALTH_CHECK",
        "`1d`",
        "a source that delivers no record for this long raises a health alert",
    ),
    (
        "PAGERDUTY_POLL_OVERLAP",
        "`5m`",
        "how far each poll reaches back before its checkpoint, to catch records PagerDuty "
        "makes visible late (`0` for none; under `31d`)",
    ),
    (
        "STREAMAPP_SOURCES_FILE",
        "—",
        "TOML file declaring many sources (`[[sources]]` tables with the same settings, "
        "plus a token file and notification channels)",
    ),
    ("STREAMAPP_APP_ID", "`streamapp`", "faust app id, also the Kafka consumer group"),
    ("STREAMAPP_PARTITIONS", "`8`", "partitions of the topics the app creates (1-1024)"),
    ("STREAMAPP_STORE", "`memory://`", "faust table store: `memory://` or `rocksdb://`"),
    ("STREAMAPP_DATA_DIR", "`./var`", "directory for the worker's local state"),
    ("STREAMAPP_WEB_PORT", "`6066`", "port of the worker's web server (health, metrics)"),
    ("STREAMAPP_LOG_LEVEL", "`info`", "`debug`, `info`, `warning` or `error`"),
    ("STREAMAPP_LOG_JSON", "`false`", "log one JSON object per line (`true`/`false`)"),
    ("STREAMAPP_TOPIC_RAW", "`pagerduty_audit_logs_raw`", "name of the internal raw topic"),
    ("STREAMAPP_TOPIC_OUTPUT", "`pagerduty_audit_logs`", "name of the output topic"),
    ("STREAMAPP_TOPIC_NOTIFICATIONS", "`notifications`", "name of the health-alert topic"),
    ("STREAMAPP_TOPIC_DLQ", "`pagerduty_audit_logs_dlq`", "name of the dead-letter topic"),
    (
        "STREAMAPP_TOPIC_OCSF",
        "`pagerduty_audit_logs.ocsf`",
        "name of the OCSF topic (used when `STREAMAPP_OCSF` is on)",
    ),
    (
        "STREAMAPP_DEDUPE_RETENTION",
        "`7d`",
        "how long a record id is remembered to drop repeats (well above the poll overlap)",
    ),
    (
        "STREAMAPP_ROUTES_FILE",
        "—",
        "TOML routing rules sending matching records to extra topics as well",
    ),
    ("STREAMAPP_OCSF", "`false`", "also publish an OCSF rendering of every record"),
    (
        "STREAMAPP_RECOVERY_CONSISTENCY_CHECK",
        "`true`",
        "faust's check that recovered table offsets do not pass a changelog's end; `false` "
        "for brokers that report stale end offsets (the embedded Tansu broker)",
    ),
    (
        "STREAMAPP_KAFKA_SECURITY_PROTOCOL",
        "`PLAINTEXT`",
        "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`",
    ),
    (
        "STREAMAPP_KAFKA_SASL_MECHANISM",
        "`PLAIN`",
        "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (SASL protocols)",
    ),
    ("STREAMAPP_KAFKA_SASL_USERNAME", "—", "SASL user name"),
    ("STREAMAPP_KAFKA_SASL_PASSWORD", "—", "SASL password (a secret: never logged)"),
    (
        "STREAMAPP_KAFKA_SASL_PASSWORD_FILE",
        "—",
        "file holding the SASL password (instead of `STREAMAPP_KAFKA_SASL_PASSWORD`)",
    ),
    (
        "STREAMAPP_KAFKA_SSL_CAFILE",
        "system CAs",
        "CA bundle (PEM) to verify the brokers (SSL protocols)",
    ),
    ("STREAMAPP_KAFKA_SSL_CERTFILE", "—", "client certificate (PEM) for mutual TLS"),
    ("STREAMAPP_KAFKA_SSL_KEYFILE", "—", "the client certificate's private key (PEM)"),
    (
        "STREAMAPP_SESSION_TIMEOUT",
        "`10`",
        "Kafka consumer-group session timeout in seconds: how soon another worker takes over",
    ),
    ("STREAMAPP_HTTP_TIMEOUT", "`30`", "seconds one PagerDuty request may take"),
    (
        "STREAMAPP_HTTP_RETRY_ATTEMPTS",
        "`6`",
        "attempts per PagerDuty request (429, 5xx, timeouts) before a poll fails and retries later",
    ),
    (
        "STREAMAPP_HTTP_RETRY_BASE",
        "`0.5`",
        "first step in seconds of the capped, jittered exponential backoff",
    ),
]

KNOWN_VARIABLES = frozenset(row[0] for row in SETTINGS_TABLE)


# --------------------------------------------------------------------------- helpers


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _duration(
    value: object,
    *,
    what: str,
    minimum: timedelta | None = None,
    maximum: timedelta | None = None,
    allow_zero: bool = False,
) -> timedelta:
    """A duration from a string (``30s``) or a number of seconds, with bounds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{what}: {_DURATION_HINT}, got {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{what}: {_DURATION_HINT}, got {value!r}")
    if allow_zero and (
        (isinstance(value, int | float) and value == 0)
        or (isinstance(value, str) and _ZERO_RE.match(value))
    ):
        delta = timedelta(0)
    else:
        try:
            delta = parse_duration(value, what=what)
        except OverflowError:
            raise ConfigError(f"{what}: duration too large, got {value!r}") from None
    if minimum is not None and delta < minimum:
        raise ConfigError(f"{what}: must be at least {format_duration(minimum)}, got {value!r}")
    if maximum is not None and delta > maximum:
        raise ConfigError(f"{what}: must be at most {format_duration(maximum)}, got {value!r}")
    return delta


def _poll_interval(value: object, what: str) -> timedelta:
    return _duration(value, what=what, minimum=MIN_POLL_INTERVAL)


def _lookback(value: object, what: str) -> timedelta:
    return _duration(value, what=what, maximum=MAX_LOOKBACK)


def _health_check(value: object, what: str) -> timedelta:
    return _duration(value, what=what)


def _overlap(value: object, what: str) -> timedelta:
    delta = _duration(value, what=what, allow_zero=True)
    if delta >= MAX_OVERLAP:
        raise ConfigError(
            f"{what}: must be less than {format_duration(MAX_OVERLAP)}, got {value!r}"
        )
    return delta


def _name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what}: expected a string, got {_type_name(value)}")
    if not _NAME_RE.match(value):
        raise ConfigError(f"{what}: expected 1-64 letters, digits, '.', '_' or '-', got {value!r}")
    return value


def _api_url(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what}: expected a string, got {_type_name(value)}")
    try:
        return check_api_url(value.strip())
    except ValueError as exc:
        raise ConfigError(f"{what}: {REDACTOR.scrub(str(exc))}") from None


def _secret_text(value: str, what: str) -> Secret:
    """Validate a secret's text without ever echoing it; wrap and register it."""
    value = value.strip()
    if not value:
        raise ConfigError(f"{what}: is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ConfigError(f"{what}: contains whitespace or control characters")
    secret = Secret(value)
    REDACTOR.add(secret)
    return secret


def _read_secret_file(path_value: object, what: str, base: Path | None = None) -> Secret:
    if not isinstance(path_value, str) or not path_value.strip():
        raise ConfigError(f"{what}: expected a file path, got {_type_name(path_value)}")
    path = Path(path_value).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what}: cannot read {str(path)!r}: {reason}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {str(path)!r} is not UTF-8 text") from None
    if not text.strip():
        raise ConfigError(f"{what}: {str(path)!r} is empty")
    try:
        return _secret_text(text, what)
    except ConfigError:
        # register whatever it held before saying it is malformed
        REDACTOR.add(text.strip())
        raise ConfigError(
            f"{what}: {str(path)!r} must hold the secret alone, with no whitespace inside"
        ) from None


def _secret_url(value: object, what: str) -> Secret:
    """An https:// (or loopback http://) URL that is itself a secret: never echoed."""
    if not isinstance(value, str):
        raise ConfigError(f"{what}: expected a string, got {_type_name(value)}")
    secret = _secret_text(value, what)
    try:
        parts = urlsplit(secret.reveal())
        host = parts.hostname
    except ValueError:
        raise ConfigError(f"{what}: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"{what}: expected an https:// URL")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigError(f"{what}: plain http:// is accepted only for loopback hosts")
    return secret


# --------------------------------------------------------------------------- environment


def _env_get(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value, or None when unset or blank (blank means unset)."""
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value


def _broker(value: str, what: str) -> str:
    items = [item.strip() for item in value.replace(";", ",").split(",")]
    if any(not item for item in items):
        raise ConfigError(f"{what}: empty entry in the broker list {value!r}")
    urls: list[str] = []
    scheme: str | None = None
    for item in items:
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
        try:
            parts = urlsplit(f"{item_scheme}://{rest}")
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if (
            not host
            or port is None
            or not 0 < port < 65536
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username
            or parts.password
        ):
            raise ConfigError(f"{what}: expected host:port after the scheme, got {item!r}")
        urls.append(f"{item_scheme}://{rest.rstrip('/')}")
    return ",".join(urls)


def _int(value: str, what: str, low: int, high: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"{what}: expected an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{what}: must be between {low} and {high}, got {number}")
    return number


def _bool(value: str, what: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{what}: expected true or false (1/0, yes/no), got {value!r}")


def _topic(value: str, what: str) -> str:
    value = value.strip()
    if not _TOPIC_RE.match(value) or value in (".", ".."):
        raise ConfigError(
            f"{what}: a Kafka topic name is 1-249 letters, digits, '.', '_' or '-', got {value!r}"
        )
    return value


def _env_defaults(env: Mapping[str, str]) -> SourceDefaults:
    base = SourceDefaults()
    api_url = _env_get(env, "PAGERDUTY_API_URL")
    poll = _env_get(env, "PAGERDUTY_POLL_INTERVAL")
    lookback = _env_get(env, "PAGERDUTY_LOOKBACK")
    health = _env_get(env, "PAGERDUTY_HEALTH_CHECK")
    overlap = _env_get(env, "PAGERDUTY_POLL_OVERLAP")
    return SourceDefaults(
        api_url=_api_url(api_url, "PAGERDUTY_API_URL") if api_url else base.api_url,
        poll_interval=_poll_interval(poll, "PAGERDUTY_POLL_INTERVAL")
        if poll
        else base.poll_interval,
        lookback=_lookback(lookback, "PAGERDUTY_LOOKBACK") if lookback else base.lookback,
        health_check=_health_check(health, "PAGERDUTY_HEALTH_CHECK")
        if health
        else base.health_check,
        overlap=_overlap(overlap, "PAGERDUTY_POLL_OVERLAP") if overlap else base.overlap,
    )


def _env_token(env: Mapping[str, str]) -> Secret | None:
    token = _env_get(env, "PAGERDUTY_API_TOKEN")
    token_file = _env_get(env, "PAGERDUTY_API_TOKEN_FILE")
    if token is not None:
        REDACTOR.add(token.strip())
    if token is not None and token_file is not None:
        raise ConfigError(
            "PAGERDUTY_API_TOKEN_FILE: set either PAGERDUTY_API_TOKEN or "
            "PAGERDUTY_API_TOKEN_FILE, not both"
        )
    if token is not None:
        return _secret_text(token, "PAGERDUTY_API_TOKEN")
    if token_file is not None:
        return _read_secret_file(token_file, "PAGERDUTY_API_TOKEN_FILE")
    return None


def _check_poll_vs_health(source: SourceConfig, what: str, poll_label: str) -> None:
    if source.health_check <= source.poll_interval:
        raise ConfigError(
            f"{what}: must be longer than {poll_label} "
            f"({format_duration(source.poll_interval)}), "
            f"got {format_duration(source.health_check)}"
        )


def load_settings(
    env: Mapping[str, str] | None = None, *, require_sources: bool = True
) -> Settings:
    """Read and validate the whole configuration; raise ConfigError (one line) on any fault."""
    if env is None:
        env = os.environ

    # the token first, so it is registered with the redactor before anything can fail
    token = _env_token(env)

    broker_value = _env_get(env, "KAFKA_BROKER")
    broker = _broker(broker_value, "KAFKA_BROKER") if broker_value else None

    defaults = _env_defaults(env)
    name_value = _env_get(env, "PAGERDUTY_SOURCE_NAME")
    source_name = _name(name_value.strip(), "PAGERDUTY_SOURCE_NAME") if name_value else "pagerduty"

    topics = Topics()
    topic_vars = {
        "raw": "STREAMAPP_TOPIC_RAW",
        "output": "STREAMAPP_TOPIC_OUTPUT",
        "notifications": "STREAMAPP_TOPIC_NOTIFICATIONS",
        "dlq": "STREAMAPP_TOPIC_DLQ",
        "ocsf": "STREAMAPP_TOPIC_OCSF",
    }
    seen_topics: dict[str, str] = {}
    for attr, var in topic_vars.items():
        value = _env_get(env, var)
        if value is not None:
            topics = replace(topics, **{attr: _topic(value, var)})
        name = getattr(topics, attr)
        if name in seen_topics:
            raise ConfigError(f"{var}: {name!r} is already the topic of {seen_topics[name]}")
        seen_topics[name] = var

    app_id_value = _env_get(env, "STREAMAPP_APP_ID")
    app_id = "streamapp"
    if app_id_value is not None:
        app_id = app_id_value.strip()
        if not _APP_ID_RE.match(app_id):
            raise ConfigError(
                f"STREAMAPP_APP_ID: expected 1-100 letters, digits, '.', '_' or '-', "
                f"got {app_id_value!r}"
            )

    partitions_value = _env_get(env, "STREAMAPP_PARTITIONS")
    partitions = _int(partitions_value, "STREAMAPP_PARTITIONS", 1, 1024) if partitions_value else 8

    store = "memory://"
    store_value = _env_get(env, "STREAMAPP_STORE")
    if store_value is not None:
        store = store_value.strip().lower()
        if store not in STORES:
            raise ConfigError(
                f"STREAMAPP_STORE: expected memory:// or rocksdb://, got {store_value!r}"
            )

    data_dir_value = _env_get(env, "STREAMAPP_DATA_DIR")
    data_dir = data_dir_value.strip() if data_dir_value else "./var"

    port_value = _env_get(env, "STREAMAPP_WEB_PORT")
    web_port = _int(port_value, "STREAMAPP_WEB_PORT", 1, 65535) if port_value else 6066

    log_level = "info"
    level_value = _env_get(env, "STREAMAPP_LOG_LEVEL")
    if level_value is not None:
        log_level = level_value.strip().lower()
        if log_level not in LOG_LEVELS:
            raise ConfigError(
                f"STREAMAPP_LOG_LEVEL: expected debug, info, warning or error, got {level_value!r}"
            )

    json_value = _env_get(env, "STREAMAPP_LOG_JSON")
    log_json = _bool(json_value, "STREAMAPP_LOG_JSON") if json_value else False

    retention_value = _env_get(env, "STREAMAPP_DEDUPE_RETENTION")
    dedupe_retention = (
        _duration(
            retention_value.strip(),
            what="STREAMAPP_DEDUPE_RETENTION",
            minimum=timedelta(seconds=10),
            maximum=timedelta(days=400),
        )
        if retention_value
        else timedelta(days=7)
    )
    routes_value = _env_get(env, "STREAMAPP_ROUTES_FILE")
    routes_file = routes_value.strip() if routes_value else None
    router = _router(routes_file)
    ocsf_value = _env_get(env, "STREAMAPP_OCSF")
    ocsf = _bool(ocsf_value, "STREAMAPP_OCSF") if ocsf_value else False

    kafka_security = _kafka_security(env)
    check_value = _env_get(env, "STREAMAPP_RECOVERY_CONSISTENCY_CHECK")
    consistency_check = (
        _bool(check_value, "STREAMAPP_RECOVERY_CONSISTENCY_CHECK") if check_value else True
    )

    session_timeout = _seconds(env, "STREAMAPP_SESSION_TIMEOUT", 10.0, 1.0, 300.0)
    http_timeout = _seconds(env, "STREAMAPP_HTTP_TIMEOUT", 30.0, 0.1, 600.0)
    http_retry_base = _seconds(env, "STREAMAPP_HTTP_RETRY_BASE", 0.5, 0.0, 60.0)
    attempts_value = _env_get(env, "STREAMAPP_HTTP_RETRY_ATTEMPTS")
    http_retry_attempts = (
        _int(attempts_value, "STREAMAPP_HTTP_RETRY_ATTEMPTS", 1, 100) if attempts_value else 6
    )

    sources: list[SourceConfig] = []
    sources_file = _env_get(env, "STREAMAPP_SOURCES_FILE")
    if sources_file is not None:
        ctx = _FileContext(Path(sources_file.strip()).expanduser())
        try:
            data = ctx.path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"STREAMAPP_SOURCES_FILE: cannot read {ctx.label!r}: {reason}"
            ) from None
        sources.extend(_parse_sources(data, ctx, defaults))
    if token is not None:
        for existing in sources:
            if existing.name == source_name:
                raise ConfigError(
                    f"PAGERDUTY_SOURCE_NAME: source name {source_name!r} is also declared "
                    f"in {sources_file}; choose another name for the PAGERDUTY_API_TOKEN source"
                )
        single = SourceConfig(
            name=source_name,
            credentials=ApiKey(token),
            api_url=defaults.api_url,
            poll_interval=defaults.poll_interval,
            lookback=defaults.lookback,
            health_check=defaults.health_check,
            overlap=defaults.overlap,
            channels=(),
        )
        _check_poll_vs_health(single, "PAGERDUTY_HEALTH_CHECK", "PAGERDUTY_POLL_INTERVAL")
        sources.append(single)
    if not sources and require_sources:
        raise ConfigError(
            "no PagerDuty source configured: set PAGERDUTY_API_TOKEN or STREAMAPP_SOURCES_FILE"
        )

    return Settings(
        broker=broker,
        sources=tuple(sources),
        topics=topics,
        app_id=app_id,
        partitions=partitions,
        store=store,
        data_dir=data_dir,
        web_port=web_port,
        log_level=log_level,
        log_json=log_json,
        session_timeout=session_timeout,
        http_timeout=http_timeout,
        http_retry_attempts=http_retry_attempts,
        http_retry_base=http_retry_base,
        dedupe_retention=dedupe_retention,
        routes_file=routes_file,
        router=router,
        ocsf=ocsf,
        kafka_security=kafka_security,
        recovery_consistency_check=consistency_check,
    )


_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _kafka_security(env: Mapping[str, str]) -> KafkaSecurity:
    protocol_value = _env_get(env, "STREAMAPP_KAFKA_SECURITY_PROTOCOL")
    protocol = (protocol_value or "PLAINTEXT").strip().upper()
    if protocol not in _PROTOCOLS:
        raise ConfigError(
            f"STREAMAPP_KAFKA_SECURITY_PROTOCOL: expected one of {', '.join(_PROTOCOLS)}, "
            f"got {protocol_value!r}"
        )
    mechanism_value = _env_get(env, "STREAMAPP_KAFKA_SASL_MECHANISM")
    mechanism = (mechanism_value or "PLAIN").strip().upper()
    if mechanism not in _MECHANISMS:
        raise ConfigError(
            f"STREAMAPP_KAFKA_SASL_MECHANISM: expected one of {', '.join(_MECHANISMS)}, "
            f"got {mechanism_value!r}"
        )
    password_value = _env_get(env, "STREAMAPP_KAFKA_SASL_PASSWORD")
    password_file = _env_get(env, "STREAMAPP_KAFKA_SASL_PASSWORD_FILE")
    if password_value is not None:
        REDACTOR.add(password_value.strip())
    if password_value is not None and password_file is not None:
        raise ConfigError(
            "STREAMAPP_KAFKA_SASL_PASSWORD_FILE: set either STREAMAPP_KAFKA_SASL_PASSWORD or "
            "STREAMAPP_KAFKA_SASL_PASSWORD_FILE, not both"
        )
    password: Secret | None = None
    if password_value is not None:
        password = _secret_text(password_value, "STREAMAPP_KAFKA_SASL_PASSWORD")
    elif password_file is not None:
        password = _read_secret_file(password_file, "STREAMAPP_KAFKA_SASL_PASSWORD_FILE")
    username = _env_get(env, "STREAMAPP_KAFKA_SASL_USERNAME")
    if username is not None and not username.strip().isprintable():
        raise ConfigError("STREAMAPP_KAFKA_SASL_USERNAME: contains control characters")
    if protocol.startswith("SASL_") and (not username or password is None):
        raise ConfigError(
            f"STREAMAPP_KAFKA_SASL_USERNAME: {protocol} needs a user name and a password "
            "(STREAMAPP_KAFKA_SASL_PASSWORD or STREAMAPP_KAFKA_SASL_PASSWORD_FILE)"
        )
    files: dict[str, str | None] = {}
    for name in ("CAFILE", "CERTFILE", "KEYFILE"):
        variable = f"STREAMAPP_KAFKA_SSL_{name}"
        value = _env_get(env, variable)
        if value is not None and not Path(value.strip()).expanduser().is_file():
            raise ConfigError(f"{variable}: {value.strip()!r} is not a readable file")
        files[name] = str(Path(value.strip()).expanduser()) if value else None
    if files["KEYFILE"] and not files["CERTFILE"]:
        raise ConfigError("STREAMAPP_KAFKA_SSL_KEYFILE: needs STREAMAPP_KAFKA_SSL_CERTFILE too")
    return KafkaSecurity(
        protocol=cast(SecurityProtocol, protocol),
        sasl_mechanism=cast(SaslMechanism, mechanism),
        sasl_username=username.strip() if username else None,
        sasl_password=password,
        ssl_cafile=files["CAFILE"],
        ssl_certfile=files["CERTFILE"],
        ssl_keyfile=files["KEYFILE"],
    )


def _router(path: str | None) -> Router:
    if path is None:
        return Router()
    if not Path(path).is_file():
        raise ConfigError(f"STREAMAPP_ROUTES_FILE: {path!r} is not a readable file")
    return load_rules(path)


def _seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    value = _env_get(env, name)
    if value is None:
        return default
    try:
        number = float(value.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name}: expected {low:g} to {high:g} seconds, got {value!r}")
    return number


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """``PAGERDUTY_*``/``STREAMAPP_*`` variables that load_settings does not read (likely typos).

    Not an error (other parts of the app may read their own variables); worth a warning.
    """
    if env is None:
        env = os.environ
    return sorted(
        name
        for name in env
        if name.startswith(("PAGERDUTY_", "STREAMAPP_")) and name not in KNOWN_VARIABLES
    )


# --------------------------------------------------------------------------- TOML file

_SETTING_KEYS = ("api_url", "poll_interval", "lookback", "health_check", "overlap")
_DEFAULTS_KEYS = frozenset({*_SETTING_KEYS, "notifications"})
_SOURCE_KEYS = frozenset({"name", "token", "token_file", "oauth", *_DEFAULTS_KEYS})
_OAUTH_KEYS = frozenset(
    {"client_id", "client_secret", "client_secret_file", "subdomain", "region", "token_url"}
)
_CHANNEL_KEYS: dict[str, frozenset[str]] = {
    "webhook": frozenset({"type", "name", "url"}),
    "slack": frozenset({"type", "name", "url"}),
    "pagerduty": frozenset({"type", "name", "routing_key", "routing_key_file", "events_url"}),
}
_VALIDATORS: dict[str, Callable[[object, str], Any]] = {
    "api_url": _api_url,
    "poll_interval": _poll_interval,
    "lookback": _lookback,
    "health_check": _health_check,
    "overlap": _overlap,
}


class _FileContext:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)
        self.base = path.parent

    def at(self, key_path: str) -> str:
        return f"{self.label}: {key_path}"


def _register_secrets(doc: object) -> None:
    """Register every secret-looking value of the file before validating anything."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("token", "client_secret", "url", "routing_key") and isinstance(value, str):
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
        raise ConfigError(f"{where}: expected a table, got {_type_name(value)}")
    return value


def _array_of_tables(value: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(
            f"{where}: expected an array of tables ([[...]]), got {_type_name(value)}"
        )
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {_type_name(value)}")
    if not value.strip():
        raise ConfigError(f"{where}: is empty")
    return value.strip()


def _secret_value(table: dict[str, Any], key: str, ctx: _FileContext, where: str) -> Secret:
    """``key`` or ``key_file`` (exactly one) from ``table``."""
    file_key = f"{key}_file"
    if key in table and file_key in table:
        raise ConfigError(ctx.at(f"{where}: set either {key} or {file_key}, not both"))
    if key in table:
        value = table[key]
        if not isinstance(value, str):
            raise ConfigError(ctx.at(f"{where}.{key}: expected a string, got {_type_name(value)}"))
        return _secret_text(value, ctx.at(f"{where}.{key}"))
    if file_key in table:
        return _read_secret_file(table[file_key], ctx.at(f"{where}.{file_key}"), ctx.base)
    raise ConfigError(ctx.at(f"{where}: missing {key} (or {file_key})"))


def _channels(value: object, ctx: _FileContext, where: str) -> tuple[Channel, ...]:
    channels: list[Channel] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(_array_of_tables(value, ctx.at(where))):
        here = f"{where}[{index}]"
        if "type" not in raw:
            raise ConfigError(ctx.at(f"{here}: missing type (webhook, slack or pagerduty)"))
        kind = raw["type"]
        if kind not in CHANNEL_KINDS:
            shown = repr(kind) if isinstance(kind, str) else _type_name(kind)
            raise ConfigError(
                ctx.at(f"{here}.type: expected webhook, slack or pagerduty, got {shown}")
            )
        kind = cast(ChannelKind, kind)
        _check_keys(raw, _CHANNEL_KEYS[kind], ctx.at(here))
        name = _name(raw["name"], ctx.at(f"{here}.name")) if "name" in raw else f"{kind}-{index}"
        if name in seen:
            raise ConfigError(
                ctx.at(
                    f"{where}: duplicate channel name {name!r} ({where}[{seen[name]}] and {here})"
                )
            )
        seen[name] = index
        if kind == "pagerduty":
            routing_key = _secret_value(raw, "routing_key", ctx, here)
            events_url = (
                _api_url(raw["events_url"], ctx.at(f"{here}.events_url"))
                if "events_url" in raw
                else DEFAULT_EVENTS_URL
            )
            channels.append(
                Channel(kind=kind, name=name, routing_key=routing_key, events_url=events_url)
            )
        else:
            if "url" not in raw:
                raise ConfigError(ctx.at(f"{here}: missing url"))
            url = _secret_url(raw["url"], ctx.at(f"{here}.url"))
            channels.append(Channel(kind=kind, name=name, url=url))
    return tuple(channels)


def _region_for(api_url: str) -> Literal["us", "eu"]:
    host = urlsplit(api_url).hostname or ""
    return "eu" if host == "eu.pagerduty.com" or host.endswith(".eu.pagerduty.com") else "us"


def _oauth(value: object, ctx: _FileContext, where: str, api_url: str) -> OAuthClient:
    table = _table(value, ctx.at(where))
    _check_keys(table, _OAUTH_KEYS, ctx.at(where))
    for key in ("client_id", "subdomain"):
        if key not in table:
            raise ConfigError(ctx.at(f"{where}: missing {key}"))
    client_id = _string(table["client_id"], ctx.at(f"{where}.client_id"))
    client_secret = _secret_value(table, "client_secret", ctx, where)
    subdomain = _string(table["subdomain"], ctx.at(f"{where}.subdomain"))
    if not _SUBDOMAIN_RE.match(subdomain):
        raise ConfigError(
            ctx.at(
                f"{where}.subdomain: expected the account subdomain (the 'acme' of "
                f"acme.pagerduty.com), got {subdomain!r}"
            )
        )
    region: Literal["us", "eu"] = _region_for(api_url)
    if "region" in table:
        raw_region = table["region"]
        if raw_region not in ("us", "eu"):
            shown = repr(raw_region) if isinstance(raw_region, str) else _type_name(raw_region)
            raise ConfigError(ctx.at(f'{where}.region: expected "us" or "eu", got {shown}'))
        region = cast(Literal["us", "eu"], raw_region)
    token_url = (
        _api_url(table["token_url"], ctx.at(f"{where}.token_url"))
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


def _apply_defaults(
    table: dict[str, Any], ctx: _FileContext, base: SourceDefaults
) -> SourceDefaults:
    where = "defaults"
    _check_keys(table, _DEFAULTS_KEYS, ctx.at(where))
    changes: dict[str, Any] = {}
    for key in _SETTING_KEYS:
        if key in table:
            changes[key] = _VALIDATORS[key](table[key], ctx.at(f"{where}.{key}"))
    if "notifications" in table:
        changes["channels"] = _channels(table["notifications"], ctx, f"{where}.notifications")
    return replace(base, **changes)


def _source(
    raw: dict[str, Any], index: int, ctx: _FileContext, defaults: SourceDefaults
) -> SourceConfig:
    where = f"sources[{index}]"
    _check_keys(raw, _SOURCE_KEYS, ctx.at(where))
    if "name" not in raw:
        raise ConfigError(ctx.at(f"{where}: missing name"))
    name = _name(raw["name"], ctx.at(f"{where}.name"))

    values: dict[str, Any] = {}
    for key in _SETTING_KEYS:
        values[key] = (
            _VALIDATORS[key](raw[key], ctx.at(f"{where}.{key}"))
            if key in raw
            else getattr(defaults, key)
        )

    given = [key for key in ("token", "token_file", "oauth") if key in raw]
    if len(given) != 1:
        problem = "missing" if not given else "more than one of"
        raise ConfigError(
            ctx.at(f"{where}: {problem} token, token_file or [oauth] (exactly one is required)")
        )
    credentials: ApiKey | OAuthClient
    if given[0] == "oauth":
        credentials = _oauth(raw["oauth"], ctx, f"{where}.oauth", values["api_url"])
    else:
        credentials = ApiKey(_secret_value(raw, "token", ctx, where))

    channels = (
        _channels(raw["notifications"], ctx, f"{where}.notifications")
        if "notifications" in raw
        else defaults.channels
    )
    source = SourceConfig(name=name, credentials=credentials, channels=channels, **values)
    _check_poll_vs_health(source, ctx.at(f"{where}.health_check"), "poll_interval")
    return source


def load_sources_file(path: str | Path, *, defaults: SourceDefaults) -> tuple[SourceConfig, ...]:
    """Read the TOML sources file; ``defaults`` fill what neither a source nor [defaults] sets."""
    ctx = _FileContext(Path(path))
    try:
        data = ctx.path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{ctx.label}: cannot read the sources file: {reason}") from None
    return _parse_sources(data, ctx, defaults)


def _parse_sources(
    data: bytes, ctx: _FileContext, defaults: SourceDefaults
) -> tuple[SourceConfig, ...]:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{ctx.label}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages name the line and column, never the offending value
        raise ConfigError(f"{ctx.label}: invalid TOML: {REDACTOR.scrub(str(exc))}") from None

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
