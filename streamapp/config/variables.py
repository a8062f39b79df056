"""Every environment variable the app reads, declared once, in the README's order.

Each ``Setting`` here produces the parsed value (``env.load_settings``), the one-line error
naming the variable (its parser), the README row (``SETTINGS_TABLE``), the dataclass default
(``DEFAULTS``) and the list ``unknown_variables`` checks against. Adding a setting is one
entry below plus its typed field on the dataclass ``into`` names (tests/test_config.py fails
when the two disagree).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from streamapp.config.secret import secret, secret_file
from streamapp.config.spec import (
    Setting,
    api_url,
    boolean,
    broker_urls,
    byte_size,
    choice,
    duration,
    host,
    integer,
    integer_or_auto,
    path,
    pattern,
    printable,
    readable_file,
    seconds,
    short_name,
    topic,
)
from streamapp.core.urls import US_API_URL
from streamapp.core.windows import MAX_LOOKBACK

__all__ = ["DEFAULTS", "SETTINGS_TABLE", "SPEC", "values_into"]

#: in the README's order; each default is run through its parser at import
SPEC: tuple[Setting, ...] = (
    Setting(
        name="KAFKA_BROKER",
        parser=broker_urls,
        default=None,
        unset="embedded broker (make run only)",
        into="broker",
        meaning="faust broker URL(s), `kafka://host:port` (comma-separated for several; "
        "`aiokafka://` also accepted)",
    ),
    Setting(
        name="PAGERDUTY_API_TOKEN",
        parser=secret,
        default=None,
        secret=True,
        meaning="API key for the single-source shortcut",
    ),
    Setting(
        name="PAGERDUTY_API_TOKEN_FILE",
        parser=secret_file,
        default=None,
        instead_of="PAGERDUTY_API_TOKEN",
        meaning="file holding the API key for the single-source shortcut (instead of "
        "`PAGERDUTY_API_TOKEN`; surrounding whitespace is stripped)",
    ),
    Setting(
        name="PAGERDUTY_API_URL",
        parser=api_url,
        default=US_API_URL,
        into="source.api_url",
        meaning="EU: `https://api.eu.pagerduty.com`; plain `http://` is accepted only for "
        "loopback hosts",
    ),
    Setting(
        name="PAGERDUTY_SOURCE_NAME",
        parser=short_name,
        default="pagerduty",
        meaning="the source's name, carried on every output record (1-64 letters, digits, "
        "`.`, `_`, `-`)",
    ),
    Setting(
        name="PAGERDUTY_POLL_INTERVAL",
        parser=duration(minimum=timedelta(seconds=1)),
        default="60",
        into="source.poll_interval",
        meaning="seconds between polls (or a duration; at least `1s`)",
    ),
    Setting(
        name="PAGERDUTY_LOOKBACK",
        parser=duration(maximum=MAX_LOOKBACK),
        default="24h",
        into="source.lookback",
        meaning="how far back the first poll of a new source reaches "
        "(`30s`, `90m`, `24h`, `7d`, up to `365d`)",
    ),
    Setting(
        name="PAGERDUTY_HEALTH_CHECK",
        parser=duration(),
        default="1d",
        into="source.health_check",
        meaning="a source that delivers no record for this long raises a health alert",
    ),
    Setting(
        name="PAGERDUTY_POLL_OVERLAP",
        parser=duration(below=timedelta(days=31), zero=True),
        default="5m",
        into="source.overlap",
        meaning="how far each poll reaches back before its checkpoint, to catch records "
        "PagerDuty makes visible late (`0` for none; under `31d`)",
    ),
    Setting(
        name="PAGERDUTY_NOTIFY_FINDINGS",
        parser=choice("none", "low", "medium", "high", "critical"),
        default="none",
        into="source.notify_findings",
        meaning="detection findings of at least this severity also go to the source's "
        "notification channels (`none`: the findings topic only)",
    ),
    Setting(
        name="STREAMAPP_SOURCES_FILE",
        parser=path,
        default=None,
        meaning="TOML file declaring many sources (`[[sources]]` tables with the same "
        "settings, plus a token file and notification channels)",
    ),
    Setting(
        name="STREAMAPP_APP_ID",
        parser=pattern(r"^[A-Za-z0-9._-]{1,100}$", "1-100 letters, digits, '.', '_' or '-'"),
        default="streamapp",
        into="app_id",
        meaning="faust app id, also the Kafka consumer group",
    ),
    Setting(
        name="STREAMAPP_PARTITIONS",
        parser=integer(1, 1024),
        default="8",
        into="partitions",
        meaning="partitions of the topics the app creates (1-1024)",
    ),
    Setting(
        name="STREAMAPP_STORE",
        parser=choice("memory://", "rocksdb://"),
        default="memory://",
        into="store",
        meaning="faust table store: `memory://` or `rocksdb://`",
    ),
    Setting(
        name="STREAMAPP_DATA_DIR",
        parser=path,
        default="./var",
        into="data_dir",
        meaning="directory for the worker's local state",
    ),
    Setting(
        name="STREAMAPP_WEB_PORT",
        parser=integer(1, 65535),
        default="6066",
        into="web_port",
        meaning="port of the worker's web server (status page, health, metrics)",
    ),
    Setting(
        name="STREAMAPP_WEB_BIND",
        parser=host,
        default="127.0.0.1",
        into="web_bind",
        meaning="address the web server listens on (loopback only by default; `0.0.0.0` for "
        "every interface)",
    ),
    Setting(
        name="STREAMAPP_WEB_FAUST_PAGES",
        parser=boolean,
        default="false",
        into="web_faust_pages",
        meaning="also serve faust's own pages (`/router/`, `/table/`, graph, stats), which show "
        "internals (`true`/`false`)",
    ),
    Setting(
        name="STREAMAPP_LOG_LEVEL",
        parser=choice("debug", "info", "warning", "error"),
        default="info",
        into="log_level",
        meaning="`debug`, `info`, `warning` or `error`",
    ),
    Setting(
        name="STREAMAPP_LOG_JSON",
        parser=boolean,
        default="false",
        into="log_json",
        meaning="log one JSON object per line (`true`/`false`)",
    ),
    Setting(
        name="STREAMAPP_TOPIC_RAW",
        parser=topic,
        default="pagerduty_audit_logs_raw",
        into="topics.raw",
        meaning="name of the internal raw topic",
    ),
    Setting(
        name="STREAMAPP_TOPIC_OUTPUT",
        parser=topic,
        default="pagerduty_audit_logs",
        into="topics.output",
        meaning="name of the output topic",
    ),
    Setting(
        name="STREAMAPP_TOPIC_NOTIFICATIONS",
        parser=topic,
        default="notifications",
        into="topics.notifications",
        meaning="name of the health-alert topic",
    ),
    Setting(
        name="STREAMAPP_TOPIC_DLQ",
        parser=topic,
        default="pagerduty_audit_logs_dlq",
        into="topics.dlq",
        meaning="name of the dead-letter topic",
    ),
    Setting(
        name="STREAMAPP_TOPIC_OCSF",
        parser=topic,
        default="pagerduty_audit_logs.ocsf",
        into="topics.ocsf",
        meaning="name of the OCSF topic (used when `STREAMAPP_OCSF` is on)",
    ),
    Setting(
        name="STREAMAPP_TOPIC_ECS",
        parser=topic,
        default="pagerduty_audit_logs.ecs",
        into="topics.ecs",
        meaning="name of the ECS topic (used when `STREAMAPP_ECS` is on)",
    ),
    Setting(
        name="STREAMAPP_TOPIC_FINDINGS",
        parser=topic,
        default="pagerduty_audit_findings",
        into="topics.findings",
        meaning="name of the detections' findings topic",
    ),
    Setting(
        name="STREAMAPP_DEDUPE_RETENTION",
        parser=duration(minimum=timedelta(seconds=10), maximum=timedelta(days=400)),
        default="7d",
        into="dedupe_retention",
        meaning="how long a record id is remembered to drop repeats (well above the poll overlap)",
    ),
    Setting(
        name="STREAMAPP_ROUTES_FILE",
        parser=path,
        default=None,
        into="routes_file",
        meaning="TOML routing rules sending matching records to extra topics as well",
    ),
    Setting(
        name="STREAMAPP_OCSF",
        parser=boolean,
        default="false",
        into="ocsf",
        meaning="also publish an OCSF rendering of every record",
    ),
    Setting(
        name="STREAMAPP_ECS",
        parser=boolean,
        default="false",
        into="ecs",
        meaning="also publish an Elastic Common Schema (ECS) rendering of every record, "
        "`event.id` = record id",
    ),
    Setting(
        name="STREAMAPP_DETECTIONS",
        parser=boolean,
        default="true",
        into="detections",
        meaning="run the detection rules on every record (findings on the findings topic)",
    ),
    Setting(
        name="STREAMAPP_RULES_FILE",
        parser=readable_file,
        default=None,
        into="rules_file",
        meaning="TOML detection rules (adds to the built-in pack, or replaces it with "
        "`builtin = false`; per-source overrides)",
    ),
    Setting(
        name="STREAMAPP_GEOIP_DB",
        parser=readable_file,
        default=None,
        into="geoip_db",
        meaning="MaxMind-format City database (GeoLite2-City.mmdb): adds `src_geo` to each "
        "record with a source address",
    ),
    Setting(
        name="STREAMAPP_ASN_DB",
        parser=readable_file,
        default=None,
        into="asn_db",
        meaning="MaxMind-format ASN database (GeoLite2-ASN.mmdb): adds `src_as`",
    ),
    Setting(
        name="STREAMAPP_RECOVERY_CONSISTENCY_CHECK",
        parser=boolean,
        default="true",
        into="recovery_consistency_check",
        meaning="faust's check that recovered table offsets do not pass a changelog's end; "
        "`false` for brokers that report stale end offsets (the embedded Tansu broker)",
    ),
    Setting(
        name="STREAMAPP_KAFKA_SECURITY_PROTOCOL",
        parser=choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", fold=str.upper),
        default="PLAINTEXT",
        into="kafka_security.protocol",
        meaning="`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`",
    ),
    Setting(
        name="STREAMAPP_KAFKA_SASL_MECHANISM",
        parser=choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", fold=str.upper),
        default="PLAIN",
        into="kafka_security.sasl_mechanism",
        meaning="`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (SASL protocols)",
    ),
    Setting(
        name="STREAMAPP_KAFKA_SASL_USERNAME",
        parser=printable,
        default=None,
        into="kafka_security.sasl_username",
        meaning="SASL user name",
    ),
    Setting(
        name="STREAMAPP_KAFKA_SASL_PASSWORD",
        parser=secret,
        default=None,
        secret=True,
        meaning="SASL password (a secret: never logged)",
    ),
    Setting(
        name="STREAMAPP_KAFKA_SASL_PASSWORD_FILE",
        parser=secret_file,
        default=None,
        instead_of="STREAMAPP_KAFKA_SASL_PASSWORD",
        meaning="file holding the SASL password (instead of `STREAMAPP_KAFKA_SASL_PASSWORD`)",
    ),
    Setting(
        name="STREAMAPP_KAFKA_SSL_CAFILE",
        parser=readable_file,
        default=None,
        unset="system CAs",
        into="kafka_security.ssl_cafile",
        meaning="CA bundle (PEM) to verify the brokers (SSL protocols)",
    ),
    Setting(
        name="STREAMAPP_KAFKA_SSL_CERTFILE",
        parser=readable_file,
        default=None,
        into="kafka_security.ssl_certfile",
        meaning="client certificate (PEM) for mutual TLS",
    ),
    Setting(
        name="STREAMAPP_KAFKA_SSL_KEYFILE",
        parser=readable_file,
        default=None,
        into="kafka_security.ssl_keyfile",
        meaning="the client certificate's private key (PEM)",
    ),
    Setting(
        name="STREAMAPP_SESSION_TIMEOUT",
        parser=seconds(1.0, 300.0),
        default="10",
        into="session_timeout",
        meaning="Kafka consumer-group session timeout in seconds: how soon another worker "
        "takes over",
    ),
    Setting(
        name="STREAMAPP_HTTP_TIMEOUT",
        parser=seconds(0.1, 600.0),
        default="30",
        into="http_timeout",
        meaning="seconds one PagerDuty request may take",
    ),
    Setting(
        name="STREAMAPP_HTTP_RETRY_ATTEMPTS",
        parser=integer(1, 100),
        default="6",
        into="http_retry_attempts",
        meaning="attempts per PagerDuty request (429, 5xx, timeouts) before a poll fails and "
        "retries later",
    ),
    Setting(
        name="STREAMAPP_HTTP_RETRY_BASE",
        parser=seconds(0.0, 60.0),
        default="0.5",
        into="http_retry_base",
        meaning="first step in seconds of the capped, jittered exponential backoff",
    ),
    Setting(
        name="STREAMAPP_HTTP_MAX_RESPONSE_BYTES",
        parser=byte_size(64 * 1024, 1024**3),
        default="16MiB",
        into="http_max_response_bytes",
        meaning="largest PagerDuty answer accepted, on the wire and after decompression; a "
        "larger one fails the poll and raises `source_degraded`",
    ),
    Setting(
        name="STREAMAPP_MAX_PAGES_PER_WINDOW",
        parser=integer_or_auto(1, 10_000_000),
        default="auto",
        into="max_pages_per_window",
        meaning="most pages one window's cursor walk may take (`auto`: one per 100 records at "
        "100 records a second over the window, plus 100)",
    ),
    Setting(
        name="STREAMAPP_MAX_JSON_DEPTH",
        parser=integer(8, 512),
        default="64",
        into="max_json_depth",
        meaning="deepest nesting of a record; a deeper one goes to the dead-letter topic",
    ),
    Setting(
        name="STREAMAPP_BACKFILL_CONCURRENCY",
        parser=integer(1, 8),
        default="4",
        into="backfill_concurrency",
        meaning="windows walked at once per token by a backfill or a catching-up poll (the "
        "960 requests a minute limit holds across all of them)",
    ),
    Setting(
        name="STREAMAPP_KAFKA_MAX_MESSAGE_BYTES",
        parser=byte_size(64 * 1024, 256 * 1024 * 1024),
        default="4MiB",
        into="kafka_max_message_bytes",
        meaning="largest message the worker writes (also capped by each topic's "
        "`max.message.bytes`); a record too large goes to the dead-letter topic",
    ),
    Setting(
        name="STREAMAPP_STALL_AFTER",
        parser=duration(minimum=timedelta(seconds=5), maximum=timedelta(days=1)),
        default="2m",
        into="stall_after",
        meaning="how long outputs may wait for the broker, or a poll go without progress "
        "(at least 3 poll intervals), before health says stalled and alerts",
    ),
)

#: (variable, default as shown to humans, meaning) for every variable, for the README
SETTINGS_TABLE: list[tuple[str, str, str]] = [(s.name, s.shown, s.meaning) for s in SPEC]

#: the parsed default of every setting with an ``into``, by ``into`` (for dataclass fields)
DEFAULTS: Mapping[str, Any] = MappingProxyType({s.into: s.value for s in SPEC if s.into})


def values_into(values: dict[str, Any], group: str) -> dict[str, Any]:
    """From ``values`` (by variable name), those landing in ``group``, by field name."""
    return {s.attr: values[s.name] for s in SPEC if s.group == group}
