"""The environment, read into ``Settings`` through the spec (``variables.SPEC``).

In this order: secret variables are registered with the redactor, so nothing later can echo
them; a variable set together with its ``_FILE`` twin is refused before either is read;
every variable is parsed by its own parser (blank means unset); then the rules that span
several variables run: distinct topics, the routing rules, SASL and TLS, the sources.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamapp.config.model import Settings, SourceConfig, SourceDefaults, Topics
from streamapp.config.security import KafkaSecurity
from streamapp.config.sources import check_poll_vs_health, read_sources_variable
from streamapp.config.spec import Setting
from streamapp.config.variables import SPEC, values_into
from streamapp.core.credentials import ApiKey
from streamapp.core.detect import load_rules
from streamapp.core.errors import ConfigError
from streamapp.core.geoip import open_geoip
from streamapp.core.redact import REDACTOR, Secret
from streamapp.core.routing import Router
from streamapp.core.routing import load_rules as load_routes

_KNOWN = frozenset(setting.name for setting in SPEC)


def load_settings(
    env: Mapping[str, str] | None = None, *, require_sources: bool = True
) -> Settings:
    """Read and validate the whole configuration; raise ConfigError (one line) on any fault."""
    values = read_variables(os.environ if env is None else env)
    topics = _topics(values)
    router = _router(values["STREAMAPP_ROUTES_FILE"])
    rules = load_rules(values["STREAMAPP_RULES_FILE"])
    kafka_security = _kafka_security(values)
    sources = _sources(values, require_sources)
    geo = open_geoip(values["STREAMAPP_GEOIP_DB"], values["STREAMAPP_ASN_DB"])
    return Settings(
        sources=sources,
        topics=topics,
        router=router,
        rules=rules,
        geo=geo,
        kafka_security=kafka_security,
        **values_into(values, ""),
    )


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """``PAGERDUTY_*``/``STREAMAPP_*`` variables that no setting reads (likely typos).

    Not an error (other parts of the app may read their own variables); worth a warning.
    """
    if env is None:
        env = os.environ
    return sorted(
        name for name in env if name.startswith(("PAGERDUTY_", "STREAMAPP_")) and name not in _KNOWN
    )


def read_variables(env: Mapping[str, str]) -> dict[str, Any]:
    """Every variable of the spec, parsed (or its default), by name."""
    for setting in SPEC:
        if setting.secret and env.get(setting.name, "").strip():
            REDACTOR.add(env[setting.name].strip())
    for setting in SPEC:
        if setting.instead_of is not None:
            _refuse_both(env, setting, setting.instead_of)
    return {setting.name: setting.read(env) for setting in SPEC}


def _refuse_both(env: Mapping[str, str], setting: Setting, other: str) -> None:
    if env.get(setting.name, "").strip() and env.get(other, "").strip():
        raise ConfigError(f"{setting.name}: set either {other} or {setting.name}, not both")


def _either(values: dict[str, Any], name: str, file_name: str) -> Secret | None:
    """The secret given directly or through its file (never both: see ``_refuse_both``)."""
    direct: Secret | None = values[name]
    return direct if direct is not None else values[file_name]


# --------------------------------------------------------------------------- cross-checks


def _topics(values: dict[str, Any]) -> Topics:
    first: dict[str, str] = {}
    for setting in SPEC:
        if setting.group != "topics":
            continue
        name = values[setting.name]
        if name in first:
            raise ConfigError(f"{setting.name}: {name!r} is already the topic of {first[name]}")
        first[name] = setting.name
    return Topics(**values_into(values, "topics"))


def _router(path: str | None) -> Router:
    if path is None:
        return Router()
    if not Path(path).is_file():
        raise ConfigError(f"STREAMAPP_ROUTES_FILE: {path!r} is not a readable file")
    return load_routes(path)


def _kafka_security(values: dict[str, Any]) -> KafkaSecurity:
    password = _either(
        values, "STREAMAPP_KAFKA_SASL_PASSWORD", "STREAMAPP_KAFKA_SASL_PASSWORD_FILE"
    )
    security = KafkaSecurity(sasl_password=password, **values_into(values, "kafka_security"))
    if security.uses_sasl and (not security.sasl_username or password is None):
        raise ConfigError(
            f"STREAMAPP_KAFKA_SASL_USERNAME: {security.protocol} needs a user name and a "
            "password (STREAMAPP_KAFKA_SASL_PASSWORD or STREAMAPP_KAFKA_SASL_PASSWORD_FILE)"
        )
    if security.ssl_keyfile and not security.ssl_certfile:
        raise ConfigError("STREAMAPP_KAFKA_SSL_KEYFILE: needs STREAMAPP_KAFKA_SSL_CERTFILE too")
    return security


# --------------------------------------------------------------------------- sources


def _sources(values: dict[str, Any], require_sources: bool) -> tuple[SourceConfig, ...]:
    """The sources file's sources, then the PAGERDUTY_API_TOKEN source, if any."""
    defaults = SourceDefaults(**values_into(values, "source"))
    sources_file: str | None = values["STREAMAPP_SOURCES_FILE"]
    sources: list[SourceConfig] = []
    if sources_file is not None:
        sources.extend(read_sources_variable("STREAMAPP_SOURCES_FILE", sources_file, defaults))
    token = _either(values, "PAGERDUTY_API_TOKEN", "PAGERDUTY_API_TOKEN_FILE")
    if token is not None:
        name: str = values["PAGERDUTY_SOURCE_NAME"]
        if any(source.name == name for source in sources):
            raise ConfigError(
                f"PAGERDUTY_SOURCE_NAME: source name {name!r} is also declared in "
                f"{sources_file}; choose another name for the PAGERDUTY_API_TOKEN source"
            )
        sources.append(_single_source(name, token, defaults))
    if not sources and require_sources:
        raise ConfigError(
            "no PagerDuty source configured: set PAGERDUTY_API_TOKEN or STREAMAPP_SOURCES_FILE"
        )
    return tuple(sources)


def _single_source(name: str, token: Secret, defaults: SourceDefaults) -> SourceConfig:
    source = SourceConfig(
        name=name,
        credentials=ApiKey(token),
        api_url=defaults.api_url,
        poll_interval=defaults.poll_interval,
        lookback=defaults.lookback,
        health_check=defaults.health_check,
        overlap=defaults.overlap,
        notify_findings=defaults.notify_findings,
    )
    check_poll_vs_health(source, "PAGERDUTY_HEALTH_CHECK", "PAGERDUTY_POLL_INTERVAL")
    return source
