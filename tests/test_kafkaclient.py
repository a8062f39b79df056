import pytest

from streamapp.config import load_settings
from streamapp.config.security import KafkaSecurity
from streamapp.core.errors import ConfigError
from streamapp.kafka.clients import bootstrap_servers, client_options
from streamapp.worker.faust_compat import credentials as faust_credentials

PASSWORD = "kafka-secret-pw-0123456789"


def settings(**env: str):
    return load_settings({"PAGERDUTY_API_TOKEN": "tok-0123456789abcdef", **env})


def test_plaintext_by_default():
    security = settings().kafka_security
    assert client_options(security) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(security) is None


def test_sasl_ssl_options_reach_aiokafka_and_faust():
    security = settings(
        STREAMAPP_KAFKA_SECURITY_PROTOCOL="sasl_ssl",
        STREAMAPP_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        STREAMAPP_KAFKA_SASL_USERNAME="svc-streamapp",
        STREAMAPP_KAFKA_SASL_PASSWORD=PASSWORD,
    ).kafka_security
    options = client_options(security)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "svc-streamapp"
    assert options["sasl_plain_password"] == PASSWORD
    assert options["ssl_context"] is not None
    credentials = faust_credentials(security)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert PASSWORD not in repr(security)


def test_sasl_without_password_is_one_line_naming_the_variable():
    with pytest.raises(ConfigError) as info:
        settings(
            STREAMAPP_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", STREAMAPP_KAFKA_SASL_USERNAME="svc"
        )
    assert str(info.value).startswith("STREAMAPP_KAFKA_SASL_USERNAME")
    assert "\n" not in str(info.value)


def test_bad_protocol_and_missing_ca_file_are_refused_without_the_password(tmp_path):
    with pytest.raises(ConfigError) as info:
        settings(STREAMAPP_KAFKA_SECURITY_PROTOCOL="TLS", STREAMAPP_KAFKA_SASL_PASSWORD=PASSWORD)
    assert "STREAMAPP_KAFKA_SECURITY_PROTOCOL" in str(info.value)
    assert PASSWORD not in str(info.value)
    with pytest.raises(ConfigError) as info:
        settings(
            STREAMAPP_KAFKA_SECURITY_PROTOCOL="SSL",
            STREAMAPP_KAFKA_SSL_CAFILE=str(tmp_path / "missing.pem"),
        )
    assert str(info.value).startswith("STREAMAPP_KAFKA_SSL_CAFILE")


def test_password_file_is_read_and_kept_secret(tmp_path):
    secret_file = tmp_path / "pw"
    secret_file.write_text(PASSWORD + "\n")
    security = settings(
        STREAMAPP_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        STREAMAPP_KAFKA_SASL_USERNAME="svc",
        STREAMAPP_KAFKA_SASL_PASSWORD_FILE=str(secret_file),
    ).kafka_security
    assert client_options(security)["sasl_plain_password"] == PASSWORD
    assert "ssl_context" not in client_options(security)


def test_bootstrap_servers_from_faust_urls():
    assert bootstrap_servers("kafka://a:9093,kafka://b") == ["a:9093", "b:9092"]
    assert bootstrap_servers(None) == ["127.0.0.1:9092"]
    assert KafkaSecurity().uses_ssl is False
