"""Configuration loading: environment variables and the TOML sources file."""

from __future__ import annotations

import os
import re
from dataclasses import fields, replace
from datetime import timedelta
from pathlib import Path

import pytest

from streamapp.config import (
    DEFAULT_EVENTS_URL,
    SETTINGS_TABLE,
    Channel,
    Settings,
    SourceConfig,
    SourceDefaults,
    Topics,
    load_settings,
    load_sources_file,
    unknown_variables,
)
from streamapp.config.security import KafkaSecurity
from streamapp.config.spec import (
    Setting,
    boolean,
    byte_size,
    duration,
    format_bytes,
    host,
    integer,
    integer_or_auto,
    path,
    readable_file,
    topic,
)
from streamapp.config.variables import SPEC
from streamapp.core.credentials import DEFAULT_TOKEN_URL, ApiKey, OAuthClient
from streamapp.core.errors import ConfigError
from streamapp.core.redact import REDACTOR, Secret
from tests.helpers import frameworks_imported_by

TOKEN = "sekret-token-value-123"
SECRET = "oauth-client-secret-456"
HOOK = "https://hooks.example.com/services/T000/B000/hooksecret789"
ROUTING = "routing-key-value-abcdef0123456789"
SLACK = "https://hooks.slack.com/services/T/B/xyz-slack-secret"
ALL_SECRETS = (TOKEN, SECRET, HOOK, "hooksecret789", ROUTING, SLACK)


#: the one source the environment alone configures, with every default the contract gives
CONTRACT = SourceConfig(
    name="pagerduty",
    credentials=ApiKey(Secret(TOKEN)),
    api_url="https://api.pagerduty.com",
    poll_interval=timedelta(seconds=60),
    lookback=timedelta(hours=24),
    health_check=timedelta(days=1),
    overlap=timedelta(minutes=5),
)


def env(**values: str) -> dict[str, str]:
    return {"PAGERDUTY_API_TOKEN": TOKEN, **values}


def config_error(environment: dict[str, str], **kwargs: bool) -> str:
    """The one-line message of the ConfigError load_settings raises; checks it leaks nothing."""
    with pytest.raises(ConfigError) as info:
        load_settings(environment, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for secret in ALL_SECRETS:
        assert secret not in message
    return message


def write(tmp_path: Path, text: str, name: str = "sources.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def file_error(path: Path, defaults: SourceDefaults | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_sources_file(path, defaults=defaults or SourceDefaults())
    message = str(info.value)
    assert "\n" not in message
    for secret in ALL_SECRETS:
        assert secret not in message
    return message


# --------------------------------------------------------------------------- defaults


def test_defaults_match_the_contract() -> None:
    settings = load_settings(env())
    assert isinstance(settings, Settings)
    assert settings.broker is None
    (source,) = settings.sources
    assert source == CONTRACT
    assert source.channels == ()
    assert isinstance(source.credentials, ApiKey)
    assert source.credentials.token.reveal() == TOKEN


def test_defaults_of_the_additions() -> None:
    settings = load_settings(env())
    assert settings.topics == Topics()
    assert settings.topics.raw == "pagerduty_audit_logs_raw"
    assert settings.topics.output == "pagerduty_audit_logs"
    assert settings.topics.notifications == "notifications"
    assert settings.topics.dlq == "pagerduty_audit_logs_dlq"
    assert settings.app_id == "streamapp"
    assert settings.partitions == 8
    assert settings.store == "memory://"
    assert settings.data_dir == "./var"
    assert settings.web_port == 6066
    assert settings.log_level == "info"
    assert settings.log_json is False


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("PAGERDUTY_", "STREAMAPP_", "KAFKA_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PAGERDUTY_API_TOKEN", TOKEN)
    monkeypatch.setenv("PAGERDUTY_SOURCE_NAME", "from-os")
    assert load_settings().sources[0].name == "from-os"


def test_blank_variables_count_as_unset() -> None:
    settings = load_settings(env(PAGERDUTY_LOOKBACK="", KAFKA_BROKER="  ", STREAMAPP_WEB_PORT=""))
    assert settings.sources[0].lookback == timedelta(hours=24)
    assert settings.broker is None
    assert settings.web_port == 6066


def test_settings_table_lists_every_variable_once() -> None:
    names = [row[0] for row in SETTINGS_TABLE]
    assert len(names) == len(set(names))
    assert set(names) >= {
        "KAFKA_BROKER",
        "PAGERDUTY_API_TOKEN",
        "PAGERDUTY_API_TOKEN_FILE",
        "PAGERDUTY_API_URL",
        "PAGERDUTY_SOURCE_NAME",
        "PAGERDUTY_POLL_INTERVAL",
        "PAGERDUTY_LOOKBACK",
        "PAGERDUTY_HEALTH_CHECK",
        "PAGERDUTY_POLL_OVERLAP",
        "STREAMAPP_SOURCES_FILE",
        "STREAMAPP_APP_ID",
        "STREAMAPP_PARTITIONS",
        "STREAMAPP_STORE",
        "STREAMAPP_DATA_DIR",
        "STREAMAPP_WEB_PORT",
        "STREAMAPP_LOG_LEVEL",
        "STREAMAPP_LOG_JSON",
        "STREAMAPP_TOPIC_RAW",
        "STREAMAPP_TOPIC_OUTPUT",
        "STREAMAPP_TOPIC_NOTIFICATIONS",
        "STREAMAPP_TOPIC_DLQ",
    }
    for row in SETTINGS_TABLE:
        assert len(row) == 3 and all(isinstance(cell, str) and cell for cell in row)


def test_settings_table_keeps_the_contract_rows_verbatim() -> None:
    table = {name: (default, meaning) for name, default, meaning in SETTINGS_TABLE}
    assert table["KAFKA_BROKER"][0] == "embedded broker (make run only)"
    assert table["PAGERDUTY_API_URL"] == (
        "`https://api.pagerduty.com`",
        "EU: `https://api.eu.pagerduty.com`; plain `http://` is accepted only for loopback hosts",
    )
    assert table["PAGERDUTY_POLL_INTERVAL"][0] == "`60`"
    assert table["PAGERDUTY_LOOKBACK"][0] == "`24h`"
    assert table["PAGERDUTY_HEALTH_CHECK"][0] == "`1d`"
    assert table["PAGERDUTY_SOURCE_NAME"][0] == "`pagerduty`"


def test_every_table_variable_is_read_by_load_settings() -> None:
    """Setting any variable of the table to garbage fails (or is a free-form value)."""
    free_form = {"PAGERDUTY_API_TOKEN", "STREAMAPP_DATA_DIR"}
    for name, _, _ in SETTINGS_TABLE:
        if name in free_form:
            continue
        environment = env(**{name: "\x01bad value\x01"})
        if name == "PAGERDUTY_API_TOKEN_FILE":
            environment.pop("PAGERDUTY_API_TOKEN")
        message = config_error(environment)
        assert message.startswith(name), message


# --------------------------------------------------------------------------- env values


def test_all_variables_are_applied(tmp_path: Path) -> None:
    settings = load_settings(
        env(
            KAFKA_BROKER="kafka://broker-1:9092",
            PAGERDUTY_API_URL="https://api.eu.pagerduty.com/",
            PAGERDUTY_SOURCE_NAME="eu-prod",
            PAGERDUTY_POLL_INTERVAL="30s",
            PAGERDUTY_LOOKBACK="7d",
            PAGERDUTY_HEALTH_CHECK="6h",
            PAGERDUTY_POLL_OVERLAP="0",
            STREAMAPP_APP_ID="audit-app",
            STREAMAPP_PARTITIONS="3",
            STREAMAPP_STORE="rocksdb://",
            STREAMAPP_DATA_DIR=str(tmp_path),
            STREAMAPP_WEB_PORT="8080",
            STREAMAPP_LOG_LEVEL="DEBUG",
            STREAMAPP_LOG_JSON="yes",
            STREAMAPP_TOPIC_RAW="raw.t",
            STREAMAPP_TOPIC_OUTPUT="out.t",
            STREAMAPP_TOPIC_NOTIFICATIONS="notes.t",
            STREAMAPP_TOPIC_DLQ="dlq.t",
        )
    )
    assert settings.broker == "kafka://broker-1:9092"
    (source,) = settings.sources
    assert source == replace(
        CONTRACT,
        name="eu-prod",
        api_url="https://api.eu.pagerduty.com",
        poll_interval=timedelta(seconds=30),
        lookback=timedelta(days=7),
        health_check=timedelta(hours=6),
        overlap=timedelta(0),
    )
    assert settings.app_id == "audit-app"
    assert settings.partitions == 3
    assert settings.store == "rocksdb://"
    assert settings.data_dir == str(tmp_path)
    assert settings.web_port == 8080
    assert settings.log_level == "debug"
    assert settings.log_json is True
    assert settings.topics == Topics(
        raw="raw.t", output="out.t", notifications="notes.t", dlq="dlq.t"
    )


def test_poll_interval_accepts_plain_seconds() -> None:
    assert load_settings(env(PAGERDUTY_POLL_INTERVAL="90")).sources[0].poll_interval == timedelta(
        seconds=90
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("kafka://localhost:9092", "kafka://localhost:9092"),
        ("aiokafka://k:29092", "aiokafka://k:29092"),
        ("kafka://a:9092,kafka://b:9093", "kafka://a:9092,kafka://b:9093"),
        ("kafka://a:9092;b:9093", "kafka://a:9092,kafka://b:9093"),
        ("kafka://[::1]:9092", "kafka://[::1]:9092"),
    ],
)
def test_kafka_broker_accepts_faust_urls(value: str, expected: str) -> None:
    assert load_settings(env(KAFKA_BROKER=value)).broker == expected


@pytest.mark.parametrize(
    "value",
    [
        "localhost:9092",
        "http://k:9092",
        "kafka://k",
        "kafka://:9092",
        "kafka://k:99999",
        "kafka://k:9092,",
    ],
)
def test_kafka_broker_refuses_bad_urls(value: str) -> None:
    assert config_error(env(KAFKA_BROKER=value)).startswith("KAFKA_BROKER: ")


def test_kafka_broker_with_credentials_is_refused_without_echo() -> None:
    message = config_error(env(KAFKA_BROKER="kafka://user:pa55word-xyz@k:9092"))
    assert message.startswith("KAFKA_BROKER: ")
    assert "pa55word-xyz" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PAGERDUTY_API_URL", "ftp://api.pagerduty.com"),
        ("PAGERDUTY_API_URL", "not a url"),
        ("PAGERDUTY_SOURCE_NAME", "has space"),
        ("PAGERDUTY_SOURCE_NAME", "x" * 65),
        ("PAGERDUTY_POLL_INTERVAL", "soon"),
        ("PAGERDUTY_POLL_INTERVAL", "0.5"),
        ("PAGERDUTY_POLL_INTERVAL", "0"),
        ("PAGERDUTY_LOOKBACK", "forever"),
        ("PAGERDUTY_LOOKBACK", "366d"),
        ("PAGERDUTY_HEALTH_CHECK", "-1"),
        ("PAGERDUTY_HEALTH_CHECK", "0"),
        ("PAGERDUTY_POLL_OVERLAP", "31d"),
        ("PAGERDUTY_POLL_OVERLAP", "a bit"),
        ("STREAMAPP_APP_ID", "app id"),
        ("STREAMAPP_PARTITIONS", "0"),
        ("STREAMAPP_PARTITIONS", "1025"),
        ("STREAMAPP_PARTITIONS", "eight"),
        ("STREAMAPP_STORE", "redis://"),
        ("STREAMAPP_WEB_PORT", "65536"),
        ("STREAMAPP_WEB_PORT", "http"),
        ("STREAMAPP_LOG_LEVEL", "verbose"),
        ("STREAMAPP_LOG_JSON", "maybe"),
        ("STREAMAPP_TOPIC_RAW", "bad/topic"),
        ("STREAMAPP_TOPIC_OUTPUT", "x" * 250),
        ("STREAMAPP_TOPIC_DLQ", ".."),
        ("STREAMAPP_TOPIC_NOTIFICATIONS", "pagerduty_audit_logs"),
        ("STREAMAPP_SOURCES_FILE", "/nonexistent/sources.toml"),
    ],
)
def test_bad_variable_gives_one_line_naming_it_without_the_token(name: str, value: str) -> None:
    message = config_error(env(**{name: value}))
    assert message.startswith(f"{name}: "), message


def test_lookback_of_exactly_365_days_is_accepted() -> None:
    assert load_settings(env(PAGERDUTY_LOOKBACK="365d")).sources[0].lookback == timedelta(days=365)


def test_lookback_over_365_days_is_refused() -> None:
    message = config_error(env(PAGERDUTY_LOOKBACK="366d"))
    assert message == "PAGERDUTY_LOOKBACK: must be at most 365d, got '366d'"


def test_bad_duration_message_shows_examples() -> None:
    message = config_error(env(PAGERDUTY_POLL_INTERVAL="soon"))
    assert message == (
        "PAGERDUTY_POLL_INTERVAL: expected a duration such as 30s, 90m, 24h or 7d, got 'soon'"
    )


def test_overlap_zero_means_none() -> None:
    for value in ("0", "0s", "0m"):
        assert load_settings(env(PAGERDUTY_POLL_OVERLAP=value)).sources[0].overlap == timedelta(0)


def test_http_api_url_refused_for_non_loopback_host() -> None:
    message = config_error(env(PAGERDUTY_API_URL="http://api.pagerduty.com"))
    assert message.startswith("PAGERDUTY_API_URL: ")
    assert "loopback" in message


def test_http_api_url_accepted_for_loopback() -> None:
    for url in ("http://127.0.0.1:8089", "http://localhost:8089/", "http://[::1]:8089"):
        assert load_settings(env(PAGERDUTY_API_URL=url)).sources[0].api_url == url.rstrip("/")


def test_health_check_must_be_longer_than_poll_interval() -> None:
    message = config_error(env(PAGERDUTY_POLL_INTERVAL="2h", PAGERDUTY_HEALTH_CHECK="1h"))
    assert message.startswith("PAGERDUTY_HEALTH_CHECK: ")
    assert "PAGERDUTY_POLL_INTERVAL" in message


def test_log_json_boolean_spellings() -> None:
    for value, expected in [
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("0", False),
        ("No", False),
    ]:
        assert load_settings(env(STREAMAPP_LOG_JSON=value)).log_json is expected


def test_two_topics_with_the_same_name_are_refused() -> None:
    message = config_error(env(STREAMAPP_TOPIC_DLQ="notifications"))
    assert message.startswith("STREAMAPP_TOPIC_DLQ: ")


def test_token_with_inner_whitespace_is_refused_without_echo() -> None:
    message = config_error({"PAGERDUTY_API_TOKEN": f"{TOKEN} extra"})
    assert message.startswith("PAGERDUTY_API_TOKEN: ")


def test_token_is_stripped_and_registered_with_redactor() -> None:
    settings = load_settings({"PAGERDUTY_API_TOKEN": f"  {TOKEN}\n"})
    credentials = settings.sources[0].credentials
    assert isinstance(credentials, ApiKey)
    assert credentials.token.reveal() == TOKEN
    assert TOKEN not in repr(settings)
    assert REDACTOR.scrub(f"x {TOKEN} y") == "x **** y"


# --------------------------------------------------------------------------- token file


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, f"{TOKEN}\n", "token")
    settings = load_settings({"PAGERDUTY_API_TOKEN_FILE": str(path)})
    credentials = settings.sources[0].credentials
    assert isinstance(credentials, ApiKey)
    assert credentials.token.reveal() == TOKEN


def test_token_and_token_file_together_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, TOKEN, "token")
    message = config_error(env(PAGERDUTY_API_TOKEN_FILE=str(path)))
    assert "PAGERDUTY_API_TOKEN_FILE" in message and "not both" in message


def test_unreadable_token_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    message = config_error({"PAGERDUTY_API_TOKEN_FILE": str(missing)})
    assert message.startswith("PAGERDUTY_API_TOKEN_FILE: ")
    assert str(missing) in message


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "  \n", "token")
    message = config_error({"PAGERDUTY_API_TOKEN_FILE": str(path)})
    assert message.startswith("PAGERDUTY_API_TOKEN_FILE: ")
    assert "empty" in message and str(path) in message


def test_token_file_with_two_lines_is_refused_without_content(tmp_path: Path) -> None:
    path = write(tmp_path, f"{TOKEN}\n{TOKEN}\n", "token")
    message = config_error({"PAGERDUTY_API_TOKEN_FILE": str(path)})
    assert str(path) in message


# --------------------------------------------------------------------------- no sources


def test_no_source_is_an_error_by_default() -> None:
    message = config_error({})
    assert message == (
        "no PagerDuty source configured: set PAGERDUTY_API_TOKEN or STREAMAPP_SOURCES_FILE"
    )


def test_no_source_allowed_when_not_required() -> None:
    settings = load_settings({}, require_sources=False)
    assert settings.sources == ()


def test_variables_are_validated_even_without_sources() -> None:
    message = config_error({"PAGERDUTY_LOOKBACK": "soon"}, require_sources=False)
    assert message.startswith("PAGERDUTY_LOOKBACK: ")


# --------------------------------------------------------------------------- TOML file

TWO_SOURCES = f"""
[defaults]
poll_interval = "2m"
lookback = "3d"

[[sources]]
name = "prod-us"
token = "{TOKEN}"
overlap = "0"

[[sources.notifications]]
type = "webhook"
name = "ops-webhook"
url = "{HOOK}"

[[sources.notifications]]
type = "slack"
url = "{SLACK}"

[[sources.notifications]]
type = "pagerduty"
routing_key = "{ROUTING}"

[[sources]]
name = "prod-eu"
api_url = "https://api.eu.pagerduty.com"
poll_interval = 45
lookback = "365d"
health_check = "12h"

[sources.oauth]
client_id = "client-abc"
client_secret = "{SECRET}"
subdomain = "acme"
"""


def test_toml_two_sources_with_oauth_and_channels(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_SOURCES)
    us, eu = load_sources_file(path, defaults=SourceDefaults())

    assert replace(us, channels=()) == replace(
        CONTRACT,
        name="prod-us",
        poll_interval=timedelta(minutes=2),  # from [defaults]
        lookback=timedelta(days=3),
        overlap=timedelta(0),
    )  # health_check from the environment defaults
    assert isinstance(us.credentials, ApiKey)
    assert us.credentials.token.reveal() == TOKEN
    webhook, slack, pagerduty = us.channels
    assert webhook == Channel(kind="webhook", name="ops-webhook", url=Secret(HOOK))
    assert slack.kind == "slack" and slack.name == "slack-1"
    assert slack.url is not None and slack.routing_key is None
    assert pagerduty.kind == "pagerduty" and pagerduty.name == "pagerduty-2"
    assert pagerduty.routing_key == Secret(ROUTING)
    assert pagerduty.events_url == DEFAULT_EVENTS_URL
    assert pagerduty.url is None

    assert eu == replace(
        CONTRACT,
        name="prod-eu",
        credentials=OAuthClient(
            client_id="client-abc",
            client_secret=Secret(SECRET),
            subdomain="acme",
            region="eu",  # inferred from the EU api_url
            token_url=DEFAULT_TOKEN_URL,
        ),
        api_url="https://api.eu.pagerduty.com",
        poll_interval=timedelta(seconds=45),
        lookback=timedelta(days=365),
        health_check=timedelta(hours=12),
    )


def test_toml_secrets_are_registered_and_hidden(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_SOURCES)
    sources = load_sources_file(path, defaults=SourceDefaults())
    text = repr(sources)
    for secret in (TOKEN, SECRET, HOOK, ROUTING, SLACK):
        assert secret not in text
        assert secret not in REDACTOR.scrub(f"leak: {secret}")


def test_toml_environment_defaults_apply(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[sources]]\nname = "a"\ntoken = "{TOKEN}"\n')
    defaults = SourceDefaults(
        api_url="http://127.0.0.1:9000",
        poll_interval=timedelta(seconds=5),
        lookback=timedelta(hours=1),
        health_check=timedelta(hours=2),
        overlap=timedelta(seconds=30),
    )
    (source,) = load_sources_file(path, defaults=defaults)
    for name in ("api_url", "poll_interval", "lookback", "health_check", "overlap"):
        assert getattr(source, name) == getattr(defaults, name), name


def test_toml_defaults_notifications_apply_to_sources_without_their_own(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[[defaults.notifications]]
type = "webhook"
url = "{HOOK}"

[[sources]]
name = "a"
token = "{TOKEN}"

[[sources]]
name = "b"
token = "{TOKEN}"
notifications = []
""",
    )
    a, b = load_sources_file(path, defaults=SourceDefaults())
    assert [c.name for c in a.channels] == ["webhook-0"]
    assert b.channels == ()


def test_toml_oauth_explicit_region_secret_file_and_token_url(tmp_path: Path) -> None:
    write(tmp_path, f"{SECRET}\n", "client-secret")
    path = write(
        tmp_path,
        f"""
[[sources]]
name = "oauth"
[sources.oauth]
client_id = "cid"
client_secret_file = "{tmp_path / "client-secret"}"
subdomain = "acme"
region = "eu"
token_url = "http://127.0.0.1:9999/oauth/token"
""",
    )
    (source,) = load_sources_file(path, defaults=SourceDefaults())
    assert isinstance(source.credentials, OAuthClient)
    assert source.credentials.client_secret.reveal() == SECRET
    assert source.credentials.region == "eu"
    assert source.credentials.token_url == "http://127.0.0.1:9999/oauth/token"


def test_toml_oauth_region_defaults_to_us(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[[sources]]
name = "oauth"
oauth = {{ client_id = "cid", client_secret = "{SECRET}", subdomain = "acme" }}
""",
    )
    (source,) = load_sources_file(path, defaults=SourceDefaults())
    assert isinstance(source.credentials, OAuthClient)
    assert source.credentials.region == "us"


def test_toml_token_file_relative_to_the_sources_file(tmp_path: Path) -> None:
    write(tmp_path, f"{TOKEN}\n", "pd-token")
    path = write(tmp_path, '[[sources]]\nname = "a"\ntoken_file = "pd-token"\n')
    (source,) = load_sources_file(path, defaults=SourceDefaults())
    assert isinstance(source.credentials, ApiKey)
    assert source.credentials.token.reveal() == TOKEN


def test_toml_pagerduty_channel_routing_key_file_and_events_url(tmp_path: Path) -> None:
    write(tmp_path, ROUTING, "rk")
    path = write(
        tmp_path,
        f"""
[[sources]]
name = "a"
token = "{TOKEN}"
[[sources.notifications]]
type = "pagerduty"
name = "pd"
routing_key_file = "rk"
events_url = "http://localhost:8080/v2/enqueue"
""",
    )
    ((channel,),) = [s.channels for s in load_sources_file(path, defaults=SourceDefaults())]
    assert channel.routing_key == Secret(ROUTING)
    assert channel.events_url == "http://localhost:8080/v2/enqueue"


# --------------------------------------------------------------------------- TOML errors


def source_with(extra: str, *, token: bool = True) -> str:
    head = '[[sources]]\nname = "a"\n' + (f'token = "{TOKEN}"\n' if token else "")
    return head + extra


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (source_with("pol_interval = '60s'\n"), "sources[0]: unknown key 'pol_interval'"),
        ('[default]\npoll_interval = "1m"\n' + source_with(""), "unknown key 'default'"),
        ('[defaults]\nname = "x"\n' + source_with(""), "defaults: unknown key 'name'"),
        ('[defaults]\ntoken = "x"\n' + source_with(""), "defaults: unknown key 'token'"),
        (
            source_with("[sources.oauth]\nclient_id = 'c'\nclient_secret = 's'\nsubdomain = 'a'\n"),
            "sources[0]: more than one of token, token_file or [oauth]",
        ),
        (
            source_with(
                "[sources.oauth]\nclient_id='c'\nclient_secret='s'\nsubdomain='a'\nscope='x'\n",
                token=False,
            ),
            "sources[0].oauth: unknown key 'scope'",
        ),
        (
            source_with(
                "[[sources.notifications]]\ntype = 'webhook'\nurl = 'https://x.io'\nuri = 1\n"
            ),
            "sources[0].notifications[0]: unknown key 'uri'",
        ),
        (
            source_with(
                "[[sources.notifications]]\ntype = 'webhook'\nurl = 'https://x.io'\n"
                "routing_key = 'r'\n"
            ),
            "sources[0].notifications[0]: unknown key 'routing_key'",
        ),
    ],
)
def test_toml_unknown_keys_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    message = file_error(write(tmp_path, text))
    assert expected in message, message
    assert message.startswith(str(tmp_path / "sources.toml"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'[[sources]]\ntoken = "{TOKEN}"\n', "sources[0]: missing name"),
        ('[[sources]]\nname = "a"\n', "sources[0]: missing token, token_file or [oauth]"),
        ("[defaults]\n", "no [[sources]] declared"),
        ("sources = []\n", "no [[sources]] declared"),
        (
            source_with("[[sources.notifications]]\nurl = 'https://x.io'\n"),
            "sources[0].notifications[0]: missing type",
        ),
        (
            source_with("[[sources.notifications]]\ntype = 'webhook'\n"),
            "sources[0].notifications[0]: missing url",
        ),
        (
            source_with("[[sources.notifications]]\ntype = 'pagerduty'\n"),
            "sources[0].notifications[0]: missing routing_key (or routing_key_file)",
        ),
        (
            source_with("[sources.oauth]\nclient_id = 'c'\nsubdomain = 'a'\n", token=False),
            "sources[0].oauth: missing client_secret (or client_secret_file)",
        ),
        (
            source_with(
                f"[sources.oauth]\nclient_secret = '{SECRET}'\nsubdomain = 'a'\n", token=False
            ),
            "sources[0].oauth: missing client_id",
        ),
    ],
)
def test_toml_missing_required_keys(tmp_path: Path, text: str, expected: str) -> None:
    message = file_error(write(tmp_path, text))
    assert expected in message, message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[sources]]\nname = 7\ntoken = "x"\n',
            "sources[0].name: expected a string, got an integer",
        ),
        (f'[[sources]]\nname = "a b"\ntoken = "{TOKEN}"\n', "sources[0].name: expected 1-64"),
        ('[[sources]]\nname = "a"\ntoken = 12345678\n', "sources[0].token: expected a string"),
        (source_with("poll_interval = true\n"), "sources[0].poll_interval: expected a duration"),
        (source_with("lookback = [1]\n"), "sources[0].lookback: expected a duration"),
        (source_with("api_url = 5\n"), "sources[0].api_url: expected a string"),
        (
            source_with("notifications = 'x'\n"),
            "sources[0].notifications: expected an array of tables",
        ),
        ("sources = 3\n", "sources: expected an array of tables"),
        ("defaults = 3\n" + source_with(""), "defaults: expected a table"),
        (source_with("oauth = 'x'\n", token=False), "sources[0].oauth: expected a table"),
        (
            source_with("[[sources.notifications]]\ntype = 'email'\n"),
            "sources[0].notifications[0].type: expected webhook, slack or pagerduty, got 'email'",
        ),
        (
            source_with(
                f"[sources.oauth]\nclient_id='c'\nclient_secret='{SECRET}'\nsubdomain='a'\nregion='ap'\n",
                token=False,
            ),
            'sources[0].oauth.region: expected "us" or "eu", got \'ap\'',
        ),
        (
            source_with(
                f"[sources.oauth]\nclient_id='c'\nclient_secret='{SECRET}'\nsubdomain='a.b'\n",
                token=False,
            ),
            "sources[0].oauth.subdomain: expected the account subdomain",
        ),
    ],
)
def test_toml_wrong_types(tmp_path: Path, text: str, expected: str) -> None:
    message = file_error(write(tmp_path, text))
    assert expected in message, message


def test_toml_bad_duration_names_file_and_key(tmp_path: Path) -> None:
    text = source_with("") + f'[[sources]]\nname = "b"\ntoken = "{TOKEN}"\npoll_interval = "soon"\n'
    path = write(tmp_path, text)
    assert file_error(path) == (
        f"{path}: sources[1].poll_interval: expected a duration such as 30s, 90m, 24h or 7d, "
        "got 'soon'"
    )


def test_toml_lookback_over_365_days(tmp_path: Path) -> None:
    path = write(tmp_path, source_with('lookback = "400d"\n'))
    assert file_error(path) == f"{path}: sources[0].lookback: must be at most 365d, got '400d'"


def test_toml_bad_default_duration_names_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[defaults]\nhealth_check = "never"\n' + source_with(""))
    assert f"{path}: defaults.health_check: expected a duration" in file_error(path)


def test_toml_overlap_bounds(tmp_path: Path) -> None:
    assert "sources[0].overlap: must be less than 31d" in file_error(
        write(tmp_path, source_with('overlap = "31d"\n'))
    )
    (source,) = load_sources_file(
        write(tmp_path, source_with("overlap = 0\n")), defaults=SourceDefaults()
    )
    assert source.overlap == timedelta(0)


def test_toml_health_check_must_exceed_poll_interval(tmp_path: Path) -> None:
    message = file_error(write(tmp_path, source_with('poll_interval = "2d"\n')))
    assert "sources[0].health_check: must be longer than poll_interval (2d), got 1d" in message


def test_toml_duplicate_source_names(tmp_path: Path) -> None:
    text = "".join(
        f'[[sources]]\nname = "{name}"\ntoken = "{TOKEN}"\n' for name in ("prod", "dev", "prod")
    )
    path = write(tmp_path, text)
    assert file_error(path) == f"{path}: duplicate source name 'prod' (sources[0] and sources[2])"


def test_toml_duplicate_channel_names(tmp_path: Path) -> None:
    channel = f"[[sources.notifications]]\ntype = 'webhook'\nname = 'ops'\nurl = '{HOOK}'\n"
    message = file_error(write(tmp_path, source_with(channel + channel)))
    assert "duplicate channel name 'ops'" in message


def test_toml_unreadable_token_file_names_path_not_content(tmp_path: Path) -> None:
    missing = tmp_path / "missing-token"
    path = write(tmp_path, f'[[sources]]\nname = "a"\ntoken_file = "{missing}"\n')
    message = file_error(path)
    assert message.startswith(f"{path}: sources[0].token_file: cannot read '{missing}'")


def test_toml_empty_token_file(tmp_path: Path) -> None:
    token_path = write(tmp_path, "\n\n", "empty-token")
    path = write(tmp_path, f'[[sources]]\nname = "a"\ntoken_file = "{token_path}"\n')
    assert file_error(path) == f"{path}: sources[0].token_file: '{token_path}' is empty"


def test_toml_token_and_token_file_together(tmp_path: Path) -> None:
    path = write(tmp_path, source_with('token_file = "/run/secrets/pd"\n'))
    assert "sources[0]: more than one of token, token_file or [oauth]" in file_error(path)


def test_toml_empty_token_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[[sources]]\nname = "a"\ntoken = "  "\n')
    assert file_error(path) == f"{path}: sources[0].token: is empty"


def test_toml_http_api_url_refused_for_non_loopback(tmp_path: Path) -> None:
    path = write(tmp_path, source_with('api_url = "http://api.pagerduty.com"\n'))
    message = file_error(path)
    assert message.startswith(f"{path}: sources[0].api_url: plain http:// is accepted only")


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/services/T000/B000/hooksecret789",
        "ftp://hooks.example.com/hooksecret789",
        "hooksecret789",
    ],
)
def test_toml_bad_channel_url_is_refused_without_echo(tmp_path: Path, url: str) -> None:
    channel = f"[[sources.notifications]]\ntype = 'slack'\nurl = '{url}'\n"
    message = file_error(write(tmp_path, source_with(channel)))
    assert "sources[0].notifications[0].url: " in message
    assert url not in message


def test_toml_loopback_http_channel_url_is_accepted(tmp_path: Path) -> None:
    channel = "[[sources.notifications]]\ntype = 'webhook'\nurl = 'http://127.0.0.1:8000/hook'\n"
    (source,) = load_sources_file(write(tmp_path, source_with(channel)), defaults=SourceDefaults())
    assert source.channels[0].url == Secret("http://127.0.0.1:8000/hook")


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[sources]]\nname = "a"\ntoken = "{TOKEN}\n')
    message = file_error(path)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert re.search(r"line 3", message), message


def test_toml_unreadable_sources_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    message = file_error(path)
    assert message.startswith(f"{path}: cannot read the sources file")


def test_toml_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe[[sources]]")
    assert file_error(path) == f"{path}: not UTF-8 text"


# --------------------------------------------------------------------------- env + file


def test_env_token_and_sources_file_are_combined(tmp_path: Path) -> None:
    path = write(tmp_path, '[[sources]]\nname = "from-file"\ntoken = "other-token-789"\n')
    settings = load_settings(env(STREAMAPP_SOURCES_FILE=str(path), PAGERDUTY_POLL_INTERVAL="30s"))
    assert [s.name for s in settings.sources] == ["from-file", "pagerduty"]
    assert all(s.poll_interval == timedelta(seconds=30) for s in settings.sources)


def test_sources_file_alone_is_enough(tmp_path: Path) -> None:
    path = write(tmp_path, source_with(""))
    settings = load_settings({"STREAMAPP_SOURCES_FILE": str(path)})
    assert [s.name for s in settings.sources] == ["a"]


def test_env_source_name_clash_with_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[sources]]\nname = "pagerduty"\ntoken = "{TOKEN}"\n')
    message = config_error(env(STREAMAPP_SOURCES_FILE=str(path)))
    assert message.startswith("PAGERDUTY_SOURCE_NAME: source name 'pagerduty' is also declared")


def test_sources_file_errors_propagate_through_load_settings(tmp_path: Path) -> None:
    path = write(tmp_path, source_with("typo = 1\n"))
    message = config_error({"STREAMAPP_SOURCES_FILE": str(path)})
    assert message.startswith(f"{path}: sources[0]: unknown key 'typo'")


def test_environment_api_url_is_the_default_for_file_sources(tmp_path: Path) -> None:
    path = write(tmp_path, source_with(""))
    settings = load_settings(
        {"STREAMAPP_SOURCES_FILE": str(path), "PAGERDUTY_API_URL": "https://api.eu.pagerduty.com"}
    )
    assert settings.sources[0].api_url == "https://api.eu.pagerduty.com"


# --------------------------------------------------------------------------- misc


def test_unknown_variables_reports_likely_typos() -> None:
    environment = env(PAGERDUTY_POLL_INTERVALL="5", STREAMAPP_LOG_LEVEL="info", HOME="/root")
    assert unknown_variables(environment) == ["PAGERDUTY_POLL_INTERVALL"]


# --------------------------------------------------------------------------- the spec


def spec_setting(**fields: object) -> Setting:
    """A setting outside SPEC, declared the way a new SPEC entry would be."""
    declared: dict[str, object] = {"name": "STREAMAPP_NEW", "default": None, "meaning": "m"}
    return Setting(**(declared | fields))  # type: ignore[arg-type]


def spec_error(setting: Setting, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        setting.read({setting.name: text})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{setting.name}: "), message
    return message


def test_settings_table_is_generated_from_the_spec() -> None:
    assert [(s.name, s.shown, s.meaning) for s in SPEC] == SETTINGS_TABLE
    assert not unknown_variables({s.name: "x" for s in SPEC})


def test_every_spec_destination_is_a_field_of_its_dataclass() -> None:
    targets = {
        "": Settings,
        "topics": Topics,
        "source": SourceDefaults,
        "kafka_security": KafkaSecurity,
    }
    fed: dict[str, set[str]] = {group: set() for group in targets}
    for setting in SPEC:
        if setting.group is not None:
            assert setting.attr in {f.name for f in fields(targets[setting.group])}, setting.name
            fed[setting.group].add(setting.attr)
    # the fields no single variable sets: built by load_settings from several
    derived = {
        "": {"sources", "topics", "router", "rules", "geo", "kafka_security"},
        "topics": set(),
        "source": {"channels"},
        "kafka_security": {"sasl_password"},
    }
    for group, target in targets.items():
        assert {f.name for f in fields(target)} == fed[group] | derived[group], group


def test_dataclass_defaults_are_the_spec_defaults() -> None:
    settings = load_settings({}, require_sources=False)
    assert settings.topics == Topics()
    assert settings.kafka_security == KafkaSecurity()
    defaults = SourceDefaults()
    for setting in SPEC:
        if setting.group == "source":
            assert getattr(defaults, setting.attr) == setting.value
        elif setting.group == "":
            assert getattr(settings, setting.attr) == setting.value, setting.name


def test_a_default_outside_its_own_bounds_fails_at_declaration() -> None:
    with pytest.raises(ConfigError, match=r"^STREAMAPP_NEW: must be between 1 and 10, got 11$"):
        spec_setting(parser=integer(1, 10), default="11")


def test_a_setting_reads_blank_as_its_default_and_strips_the_rest() -> None:
    setting = spec_setting(parser=integer(1, 10), default="3")
    assert setting.read({}) == 3
    assert setting.read({"STREAMAPP_NEW": "  "}) == 3
    assert setting.read({"STREAMAPP_NEW": " 7\n"}) == 7
    assert setting.shown == "`3`"
    assert spec_setting(parser=path).shown == "—"
    assert spec_setting(parser=path, unset="system CAs").shown == "system CAs"


def test_byte_sizes() -> None:
    setting = spec_setting(parser=byte_size(1024, 64 * 1024**2), default="16MiB")
    assert setting.value == 16 * 1024**2
    assert setting.shown == "`16MiB`"
    assert setting.read({"STREAMAPP_NEW": "512KiB"}) == 512 * 1024
    assert setting.read({"STREAMAPP_NEW": "2 MB"}) == 2_000_000
    assert setting.read({"STREAMAPP_NEW": "4096"}) == 4096
    assert "expected a size such as" in spec_error(setting, "16 megs")
    assert "expected a size such as" in spec_error(setting, "1.5MiB")
    assert spec_error(setting, "65MiB") == (
        "STREAMAPP_NEW: must be between 1KiB and 64MiB, got '65MiB'"
    )
    assert format_bytes(1536) == "1536B" and format_bytes(3 * 1024**3) == "3GiB"


def test_optional_integer_with_an_auto_default() -> None:
    setting = spec_setting(parser=integer_or_auto(1, 1000), default="auto")
    assert setting.value is None and setting.shown == "`auto`"
    assert setting.read({"STREAMAPP_NEW": "AUTO"}) is None
    assert setting.read({"STREAMAPP_NEW": "50"}) == 50
    assert spec_error(setting, "0") == "STREAMAPP_NEW: must be between 1 and 1000, got 0"
    assert "expected an integer" in spec_error(setting, "many")


def test_hosts() -> None:
    setting = spec_setting(parser=host, default="127.0.0.1")
    assert setting.value == "127.0.0.1"
    for value in ("0.0.0.0", "::", "localhost", "web.internal", "a-b.example.com."):
        assert setting.read({"STREAMAPP_NEW": value}) == value
    for value in ("bad host", "http://x", "-x.example", "x" * 64, "[::1]"):
        assert "expected an IP address or a host name" in spec_error(setting, value)


def test_optional_readable_file(tmp_path: Path) -> None:
    setting = spec_setting(parser=readable_file)
    assert setting.read({}) is None
    existing = write(tmp_path, "db", "geo.mmdb")
    assert setting.read({"STREAMAPP_NEW": str(existing)}) == str(existing)
    missing = tmp_path / "none.mmdb"
    assert spec_error(setting, str(missing)) == (
        f"STREAMAPP_NEW: {str(missing)!r} is not a readable file"
    )


def test_durations_booleans_and_topics_as_new_settings() -> None:
    every = spec_setting(parser=duration(minimum=timedelta(seconds=5)), default="1m")
    assert every.value == timedelta(minutes=1)
    assert every.read({"STREAMAPP_NEW": "90"}) == timedelta(seconds=90)
    assert spec_error(every, "1s") == "STREAMAPP_NEW: must be at least 5s, got '1s'"
    flag = spec_setting(parser=boolean, default="false")
    assert flag.value is False and flag.read({"STREAMAPP_NEW": "on"}) is True
    name = spec_setting(parser=topic, default="audit.extra")
    assert name.value == "audit.extra"
    assert "a Kafka topic name" in spec_error(name, "no spaces")


def test_sasl_password_and_its_file_together_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka-pw-0123", "pw")
    message = config_error(
        env(
            STREAMAPP_KAFKA_SASL_PASSWORD="kafka-pw-0123",
            STREAMAPP_KAFKA_SASL_PASSWORD_FILE=str(path),
        )
    )
    assert message.startswith("STREAMAPP_KAFKA_SASL_PASSWORD_FILE: ")
    assert "not both" in message and "kafka-pw-0123" not in message


def test_the_config_package_imports_no_framework() -> None:
    assert frameworks_imported_by("streamapp.config") == []


def test_notify_findings_reaches_the_single_source_and_sources_file(tmp_path) -> None:
    single = load_settings(
        {"PAGERDUTY_API_TOKEN": "tok-0123456789abcdef", "PAGERDUTY_NOTIFY_FINDINGS": "high"}
    )
    assert single.sources[0].notify_findings == "high"
    token = tmp_path / "token"
    token.write_text("tok-0123456789abcdef")
    path = tmp_path / "sources.toml"
    path.write_text(
        f'[[sources]]\nname = "a"\ntoken_file = "{token}"\nnotify_findings = "critical"\n'
        f'[[sources]]\nname = "b"\ntoken_file = "{token}"\n'
    )
    many = load_settings({"STREAMAPP_SOURCES_FILE": str(path)})
    assert [s.notify_findings for s in many.sources] == ["critical", "none"]
    with pytest.raises(ConfigError) as info:
        load_settings({"PAGERDUTY_API_TOKEN": "tok-x", "PAGERDUTY_NOTIFY_FINDINGS": "loud"})
    assert str(info.value).startswith("PAGERDUTY_NOTIFY_FINDINGS")
