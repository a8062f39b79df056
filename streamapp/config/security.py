"""How the worker and the CLI's own Kafka clients authenticate: SASL and TLS settings."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

from streamapp.config.variables import DEFAULTS
from streamapp.core.redact import Secret

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: SecurityProtocol = DEFAULTS["kafka_security.protocol"]
    sasl_mechanism: SaslMechanism = DEFAULTS["kafka_security.sasl_mechanism"]
    sasl_username: str | None = DEFAULTS["kafka_security.sasl_username"]
    #: from STREAMAPP_KAFKA_SASL_PASSWORD or STREAMAPP_KAFKA_SASL_PASSWORD_FILE
    sasl_password: Secret | None = None
    ssl_cafile: str | None = DEFAULTS["kafka_security.ssl_cafile"]
    ssl_certfile: str | None = DEFAULTS["kafka_security.ssl_certfile"]
    ssl_keyfile: str | None = DEFAULTS["kafka_security.ssl_keyfile"]

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
