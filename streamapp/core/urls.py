"""Which API base URLs we accept."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

US_API_URL = "https://api.pagerduty.com"
EU_API_URL = "https://api.eu.pagerduty.com"


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(url: str) -> str:
    """Return ``url`` without a trailing slash, or raise ValueError saying what is wrong.

    ``https://`` anywhere; plain ``http://`` only for loopback hosts (the simulator, a
    local proxy), so a token is never sent in clear text over a network.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an https:// URL such as {US_API_URL}, got {url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(
            f"plain http:// is accepted only for loopback hosts, got host {parts.hostname!r}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("the API URL must not carry a query, fragment or credentials")
    return url.rstrip("/")
