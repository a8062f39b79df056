"""Durations as operators write them: ``30s``, ``90m``, ``24h``, ``7d`` (or plain seconds)."""

from __future__ import annotations

import re
from datetime import timedelta

from streamapp.core.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str | int | float, *, what: str) -> timedelta:
    """Parse ``text`` into a timedelta; ``what`` names the setting in the error."""
    if isinstance(text, bool):
        raise ConfigError(f"{what}: expected a duration such as 30s, 90m, 24h or 7d, got {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _PATTERN.match(text)
        if match is None:
            raise ConfigError(
                f"{what}: expected a duration such as 30s, 90m, 24h or 7d, got {text!r}"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ConfigError(f"{what}: must be greater than zero, got {text!r}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling of ``delta`` in the units parse_duration accepts."""
    seconds = delta.total_seconds()
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
