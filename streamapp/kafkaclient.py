"""How our own Kafka clients (CLI commands, the gap reader) reach the cluster: the broker
list and the security settings the worker uses too (SASL, SSL).

The settings are configured once per process (``configure``) by ``streamapp.app``, so every
aiokafka client built with ``client_options()`` connects like faust's own.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Literal

from streamapp.redact import Secret

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_ssl:
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context


_security = KafkaSecurity()


def configure(security: KafkaSecurity) -> None:
    global _security
    _security = security


def bootstrap_servers(broker: str | None) -> list[str]:
    """``host:port`` list from faust's broker URL form (``kafka://h:p,kafka://h2:p``)."""
    if not broker:
        return ["127.0.0.1:9092"]
    servers = []
    for part in broker.split(","):
        part = part.strip()
        if not part:
            continue
        host = part.split("://", 1)[-1].rstrip("/")
        servers.append(host if ":" in host else f"{host}:9092")
    return servers or ["127.0.0.1:9092"]


def client_options(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """Keyword arguments for an aiokafka producer, consumer or admin client."""
    security = security or _security
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_ssl:
        options["ssl_context"] = security.ssl_context()
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = (
            security.sasl_password.reveal() if security.sasl_password else None
        )
    return options


def faust_credentials(security: KafkaSecurity) -> Any:
    """The same settings as faust's ``broker_credentials`` (None for plaintext)."""
    import faust

    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password.reveal() if security.sasl_password else None,
            ssl_context=security.ssl_context(),
            mechanism=security.sasl_mechanism,
        )
    if security.uses_ssl:
        return faust.SSLCredentials(security.ssl_context())
    return None
