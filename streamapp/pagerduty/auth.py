"""The ``Authorization`` header of a source: an API key, or a scoped OAuth app's token.

An OAuth token comes from the client-credentials grant, is cached, and is fetched again
``refresh_margin`` seconds before it expires (PagerDuty's tokens live 86 400 s). Callers
that find it expired at the same time share one refresh. ``invalidate()`` drops the cached
token; the client calls it once after PagerDuty answers 401 to a Bearer token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import msgspec

from streamapp.core.credentials import ApiKey, Credentials, OAuthClient
from streamapp.core.errors import (
    AuthenticationFailed,
    PagerDutyError,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    ServerError,
    UnexpectedStatus,
)
from streamapp.core.redact import REDACTOR, Secret, one_line
from streamapp.core.urls import check_api_url
from streamapp.pagerduty.ratelimit import parse_reset
from streamapp.pagerduty.retry import transport_error

#: PagerDuty's documented token lifetime, assumed when the answer omits ``expires_in``
DEFAULT_TOKEN_LIFETIME = 86400.0


class TokenProvider(Protocol):
    #: stable, non-reversible name of the credential (rate-limit gate, logs)
    fingerprint: str

    async def authorization(self) -> str:
        """The value of the ``Authorization`` header."""
        ...

    def invalidate(self) -> None:
        """Forget any cached token, so the next ``authorization()`` fetches a new one."""
        ...


class ApiKeyAuth:
    """A REST API key: ``Authorization: Token token=<key>``."""

    def __init__(self, key: ApiKey) -> None:
        self._key = key
        self.fingerprint = key.fingerprint()

    async def authorization(self) -> str:
        return f"Token token={self._key.token.reveal()}"

    def invalidate(self) -> None:
        """An API key cannot be refreshed; nothing to forget."""

    def __repr__(self) -> str:
        return f"ApiKeyAuth(fingerprint={self.fingerprint!r})"


class _TokenAnswer(msgspec.Struct, kw_only=True):
    access_token: str
    expires_in: float | None = None
    token_type: str | None = None


class _OAuthErrorBody(msgspec.Struct, kw_only=True):
    error: str | None = None
    error_description: str | None = None


class OAuthAuth:
    """A scoped OAuth app: client-credentials grant, ``Authorization: Bearer <token>``."""

    def __init__(
        self,
        creds: OAuthClient,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin: float = 300.0,
        timeout: float = 30.0,
    ) -> None:
        check_api_url(creds.token_url)  # ValueError: never send the secret over plain http
        self._creds = creds
        self._http = http
        self._clock = clock
        self._margin = refresh_margin
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._token: Secret | None = None
        self._refresh_at = float("-inf")
        self._host = urlsplit(creds.token_url).hostname or creds.token_url
        self.fingerprint = creds.fingerprint()

    def __repr__(self) -> str:
        return f"OAuthAuth(client_id={self._creds.client_id!r}, fingerprint={self.fingerprint!r})"

    def _current(self) -> Secret | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def authorization(self) -> str:
        token = self._current()
        if token is None:
            async with self._lock:
                token = self._current()  # another caller may have refreshed meanwhile
                if token is None:
                    token = await self._fetch()
        return f"Bearer {token.reveal()}"

    def invalidate(self) -> None:
        self._token = None
        self._refresh_at = float("-inf")

    async def _fetch(self) -> Secret:
        creds = self._creds
        secret = creds.client_secret.reveal()
        form = {
            "grant_type": "client_credentials",
            "client_id": creds.client_id,
            "client_secret": secret,
            "scope": creds.scope,
        }
        what = f"the OAuth token endpoint {self._host}"
        failure: PagerDutyError | None = None
        started = self._clock()  # the token's life is counted from before the request
        try:
            response = await self._http.post(
                creds.token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                follow_redirects=False,
            )
        except (httpx.RequestError, OSError) as exc:
            failure = transport_error(exc, what=what, hide=(secret,))
        if failure is not None:
            raise failure  # outside the except block: the httpx error is not chained
        if response.status_code != 200:
            raise self._status_error(response, what, secret)
        try:
            answer = msgspec.json.decode(response.content, type=_TokenAnswer)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            failure = ProtocolError(
                f"{what} answered 200 without a usable access token ({one_line(str(exc))})"
            )
        if failure is not None:
            raise failure
        if not answer.access_token:
            raise ProtocolError(f"{what} answered 200 with an empty access token")
        token = Secret(answer.access_token)
        REDACTOR.add(token)  # second line of defence for log lines
        lifetime = answer.expires_in if answer.expires_in else DEFAULT_TOKEN_LIFETIME
        # a token shorter-lived than the margin is still used for half its life
        self._refresh_at = started + max(lifetime - self._margin, lifetime / 2)
        self._token = token
        return token

    def _status_error(self, response: httpx.Response, what: str, secret: str) -> PagerDutyError:
        status = response.status_code
        said = ""
        try:
            body = msgspec.json.decode(response.content, type=_OAuthErrorBody)
            parts = [p for p in (body.error, body.error_description) if p]
            if parts:
                said = f" (identity service: {one_line(': '.join(parts), hide=(secret,))})"
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        creds = self._creds
        if status in (400, 401):
            return AuthenticationFailed(
                f"{what} refused the OAuth client ({status}){said}: check the client id"
                f" {creds.client_id!r} and secret, the subdomain {creds.subdomain!r} and"
                f" region {creds.region!r} (scope {creds.scope!r})",
                status=status,
            )
        if status == 403:
            return PermissionDenied(
                f"{what} refused the grant (403){said}: the OAuth app must be allowed the"
                f" scope {creds.scope!r}",
                status=status,
            )
        if status == 429:
            return RateLimited(
                f"{what} rate-limited the token request (429){said}",
                reset_after=parse_reset(response.headers),
            )
        if status >= 500:
            return ServerError(f"{what} failed ({status}){said}; retrying later", status=status)
        return UnexpectedStatus(f"{what} answered an unexpected {status}{said}", status=status)


def make_auth(creds: Credentials, http: httpx.AsyncClient) -> TokenProvider:
    """The token provider for a source's credentials."""
    if isinstance(creds, ApiKey):
        return ApiKeyAuth(creds)
    return OAuthAuth(creds, http)
