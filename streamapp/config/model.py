"""The typed result of loading the configuration: Settings and what it is made of.

Defaults come from the spec (``variables.SPEC``, through ``DEFAULTS``); none is written
here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from streamapp.config.security import KafkaSecurity
from streamapp.config.variables import DEFAULTS
from streamapp.core.credentials import ApiKey, OAuthClient
from streamapp.core.detect import RuleSet, builtin_rules
from streamapp.core.geoip import GeoLookup
from streamapp.core.redact import Secret
from streamapp.core.routing import Router

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

ChannelKind = Literal["webhook", "slack", "pagerduty"]
CHANNEL_KINDS: tuple[ChannelKind, ...] = ("webhook", "slack", "pagerduty")


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
    #: least severity of a finding that also goes to ``channels`` (``none``: none does)
    notify_findings: str = DEFAULTS["source.notify_findings"]


@dataclass(frozen=True)
class SourceDefaults:
    """What a source gets for every setting it does not name (environment, then [defaults])."""

    api_url: str = DEFAULTS["source.api_url"]
    poll_interval: timedelta = DEFAULTS["source.poll_interval"]
    lookback: timedelta = DEFAULTS["source.lookback"]
    health_check: timedelta = DEFAULTS["source.health_check"]
    overlap: timedelta = DEFAULTS["source.overlap"]
    notify_findings: str = DEFAULTS["source.notify_findings"]
    channels: tuple[Channel, ...] = ()


@dataclass(frozen=True)
class Topics:
    raw: str = DEFAULTS["topics.raw"]
    output: str = DEFAULTS["topics.output"]
    notifications: str = DEFAULTS["topics.notifications"]
    dlq: str = DEFAULTS["topics.dlq"]
    ocsf: str = DEFAULTS["topics.ocsf"]
    ecs: str = DEFAULTS["topics.ecs"]
    findings: str = DEFAULTS["topics.findings"]


@dataclass(frozen=True)
class Settings:
    """Everything ``load_settings`` read; what each field means is in ``variables.SPEC``."""

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
    session_timeout: float = DEFAULTS["session_timeout"]
    http_timeout: float = DEFAULTS["http_timeout"]
    http_retry_attempts: int = DEFAULTS["http_retry_attempts"]
    http_retry_base: float = DEFAULTS["http_retry_base"]
    dedupe_retention: timedelta = DEFAULTS["dedupe_retention"]
    routes_file: str | None = DEFAULTS["routes_file"]
    #: built from ``routes_file``; the main topic only when there is none
    router: Router = field(default_factory=lambda: Router())
    ocsf: bool = DEFAULTS["ocsf"]
    recovery_consistency_check: bool = DEFAULTS["recovery_consistency_check"]
    web_bind: str = DEFAULTS["web_bind"]
    web_faust_pages: bool = DEFAULTS["web_faust_pages"]
    http_max_response_bytes: int = DEFAULTS["http_max_response_bytes"]
    max_pages_per_window: int | None = DEFAULTS["max_pages_per_window"]
    max_json_depth: int = DEFAULTS["max_json_depth"]
    backfill_concurrency: int = DEFAULTS["backfill_concurrency"]
    kafka_max_message_bytes: int = DEFAULTS["kafka_max_message_bytes"]
    stall_after: timedelta = DEFAULTS["stall_after"]
    ecs: bool = DEFAULTS["ecs"]
    detections: bool = DEFAULTS["detections"]
    rules_file: str | None = DEFAULTS["rules_file"]
    #: built from ``rules_file``: the built-in pack when there is none
    rules: RuleSet = field(default_factory=builtin_rules)
    geoip_db: str | None = DEFAULTS["geoip_db"]
    asn_db: str | None = DEFAULTS["asn_db"]
    #: opened from ``geoip_db`` / ``asn_db``; None when neither is set
    geo: GeoLookup | None = None
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
