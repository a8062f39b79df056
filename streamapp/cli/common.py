"""What every command shares: one-line failures with an exit status, and choosing a source."""

from __future__ import annotations

import os
import sys

from aiokafka.errors import KafkaError

from streamapp.config import Settings, SourceConfig
from streamapp.core.errors import ConfigError, StreamappError
from streamapp.core.redact import REDACTOR
from streamapp.kafka.clients import Cluster

NO_SOURCE = "no PagerDuty source configured: set PAGERDUTY_API_TOKEN or STREAMAPP_SOURCES_FILE"


class CommandFailed(StreamappError):
    """A command stops with one line and an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def failure(exc: BaseException, cluster: Cluster) -> tuple[str, int]:
    """One line and an exit status for whatever stopped a command (never a secret)."""
    if isinstance(exc, CommandFailed):
        return REDACTOR.scrub(str(exc)), exc.status
    if isinstance(exc, ConfigError):
        return REDACTOR.scrub(str(exc)), 2
    if isinstance(exc, StreamappError):
        return REDACTOR.scrub(str(exc)), 1
    if isinstance(exc, KafkaError):
        return REDACTOR.scrub(str(cluster.problem(exc))), 1
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return f"internal error: {REDACTOR.scrub(text)}", 1


def flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        # the reader went away (``| head``): nothing more to say, and no noise at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass


def pick_source(settings: Settings, name: str | None) -> SourceConfig:
    """The source ``--source`` names (or the only one); ConfigError naming the choices."""
    if not settings.sources:
        raise ConfigError(NO_SOURCE)
    names = ", ".join(s.name for s in settings.sources)
    if name is None:
        if len(settings.sources) == 1:
            return settings.sources[0]
        raise ConfigError(f"--source: several sources are configured, name one of: {names}")
    for source in settings.sources:
        if source.name == name:
            return source
    raise ConfigError(f"--source: no source named {name!r} (configured: {names})")
