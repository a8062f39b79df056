"""One exception tree for the whole project.

    StreamappError
    ├── ConfigError                 bad variable, file or key (one line, no secret)
    ├── PublishError                the broker did not acknowledge a write
    └── PagerDutyError
        ├── TransportError          no HTTP answer (retryable)
        │   ├── RequestTimeout
        │   └── ConnectFailed       DNS, refused, reset, TLS
        ├── ProtocolError           an answer we cannot read (not JSON, wrong shape)
        │   └── BoundExceeded       an answer past a bound (size, pages): not retried
        │       ├── ResponseTooLarge
        │       └── WalkTooLong
        └── ApiError                an HTTP error status from PagerDuty
            ├── BadRequest          400
            ├── AuthenticationFailed 401: wrong token or wrong region
            ├── AuditTrailUnavailable 402: the plan lacks Audit Trail
            ├── PermissionDenied    403: not admin/owner, or scope missing
            ├── RateLimited         429 (retryable)
            │   └── RateLimitWait   the token is paused longer than the caller waits
            ├── ServerError         5xx (retryable)
            └── UnexpectedStatus    anything else

Messages never contain a token: they are built from fixed text, the status, and
PagerDuty's own error message (which never echoes the credential).
"""

from __future__ import annotations


class StreamappError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(StreamappError):
    """A configuration value is wrong; the message names the variable or file and key."""


class PublishError(StreamappError):
    """The broker refused or did not acknowledge a write."""


class PagerDutyError(StreamappError):
    """Anything that went wrong talking to PagerDuty."""

    #: short machine-readable kind, used by health state and metrics
    kind: str = "pagerduty_error"
    #: True when trying again later may succeed
    retryable: bool = False


class TransportError(PagerDutyError):
    kind = "transport"
    retryable = True


class RequestTimeout(TransportError):
    kind = "timeout"


class ConnectFailed(TransportError):
    kind = "unreachable"


class ProtocolError(PagerDutyError):
    kind = "protocol"
    retryable = True


class BoundExceeded(ProtocolError):
    """An answer went past one of the collector's bounds (its message names the bound).

    Not retried within a poll: the same answer would most likely trip it again. Health
    raises ``source_degraded`` at once for it, naming the bound.
    """

    kind = "bound_exceeded"
    retryable = False


class ResponseTooLarge(BoundExceeded):
    kind = "response_too_large"


class WalkTooLong(BoundExceeded):
    """A window's cursor walk went on past the page bound, or kept handing out empty pages."""

    kind = "walk_too_long"


class ApiError(PagerDutyError):
    kind = "api_error"

    def __init__(self, message: str, *, status: int, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BadRequest(ApiError):
    kind = "bad_request"


class AuthenticationFailed(ApiError):
    kind = "unauthorized"


class AuditTrailUnavailable(ApiError):
    kind = "plan_lacks_audit_trail"


class PermissionDenied(ApiError):
    kind = "forbidden"


class RateLimited(ApiError):
    kind = "rate_limited"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        code: int | None = None,
        reset_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        #: seconds until the rate-limit window resets, when PagerDuty said so
        self.reset_after = reset_after


class RateLimitWait(RateLimited):
    """PagerDuty asked this token to wait longer than the caller is willing to block."""

    kind = "rate_limit_wait"
    retryable = False


class ServerError(ApiError):
    kind = "server_error"
    retryable = True


class UnexpectedStatus(ApiError):
    kind = "unexpected_status"
