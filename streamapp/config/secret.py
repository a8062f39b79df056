"""Secret values (tokens, client secrets, passwords, channel URLs), checked without echo.

Every secret is wrapped in ``Secret`` and registered with ``REDACTOR`` as soon as it is
read; an error about one names the variable, key or file path, never the value.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from streamapp.config.spec import string, type_name
from streamapp.core.errors import ConfigError
from streamapp.core.redact import REDACTOR, Secret
from streamapp.core.urls import is_loopback_host


def secret_text(value: str, what: str) -> Secret:
    """Validate a secret's text without ever echoing it; wrap and register it."""
    value = value.strip()
    if not value:
        raise ConfigError(f"{what}: is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ConfigError(f"{what}: contains whitespace or control characters")
    secret = Secret(value)
    REDACTOR.add(secret)
    return secret


def secret(value: object, what: str) -> Secret:
    """Parser: the value itself is the secret."""
    return secret_text(string(value, what), what)


def secret_file(value: object, what: str, base: Path | None = None) -> Secret:
    """Parser: the value is the path of a file holding the secret alone.

    A relative path is taken from ``base`` when given (the sources file's directory).
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what}: expected a file path, got {type_name(value)}")
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    text = _read_text(path, what)
    try:
        return secret_text(text, what)
    except ConfigError:
        # register whatever it held before saying it is malformed
        REDACTOR.add(text.strip())
        raise ConfigError(
            f"{what}: {str(path)!r} must hold the secret alone, with no whitespace inside"
        ) from None


def _read_text(path: Path, what: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what}: cannot read {str(path)!r}: {reason}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {str(path)!r} is not UTF-8 text") from None
    if not text.strip():
        raise ConfigError(f"{what}: {str(path)!r} is empty")
    return text


def secret_url(value: object, what: str) -> Secret:
    """Parser: an https:// (or loopback http://) URL that is itself a secret."""
    url = secret(value, what)
    try:
        parts = urlsplit(url.reveal())
        host = parts.hostname
    except ValueError:
        raise ConfigError(f"{what}: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"{what}: expected an https:// URL")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigError(f"{what}: plain http:// is accepted only for loopback hosts")
    return url
