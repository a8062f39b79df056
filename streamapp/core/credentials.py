"""How a source proves who it is to PagerDuty: an API key or a scoped OAuth client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streamapp.core.redact import Secret

#: scope the OAuth client-credentials grant asks for (with the account scope)
AUDIT_SCOPE = "audit_records.read"
DEFAULT_TOKEN_URL = "https://identity.pagerduty.com/oauth/token"


@dataclass(frozen=True)
class ApiKey:
    """A REST API key (account admin/owner), sent as ``Authorization: Token token=<key>``."""

    token: Secret

    def fingerprint(self) -> str:
        return self.token.fingerprint()


@dataclass(frozen=True)
class OAuthClient:
    """A scoped OAuth app: client-credentials grant, sent as ``Authorization: Bearer <token>``."""

    client_id: str
    client_secret: Secret
    subdomain: str
    region: Literal["us", "eu"] = "us"
    token_url: str = DEFAULT_TOKEN_URL

    @property
    def scope(self) -> str:
        return f"as_account-{self.region}.{self.subdomain} {AUDIT_SCOPE}"

    def fingerprint(self) -> str:
        return Secret(f"{self.client_id}:{self.client_secret.reveal()}").fingerprint()


Credentials = ApiKey | OAuthClient
