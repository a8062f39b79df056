"""Logging for the worker: secrets redacted on every handler, plain or JSON lines.

Handed to faust as ``logging_config`` so it applies from the worker's first line.

At ``info`` a person reads one line per poll and per change of state: the libraries
underneath (faust, mode, aiokafka) log their own start-up, subscriptions and partition
assignments at INFO too, so below ``debug`` they are kept to warnings and errors.
``STREAMAPP_LOG_LEVEL=debug``, or ``-l debug`` on the worker's command line, shows
everything.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from streamapp.core.redact import REDACTOR

PLAIN_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"

#: loggers that are quiet (warnings and errors only) unless the level is ``debug``
LIBRARY_LOGGERS = (
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    # mode names a service's logger after its module: the worker service's
    # "Starting..."/"Stopping..." lines
    "streamapp.worker.app",
)

#: loggers that stay quiet even at ``debug`` (one line per HTTP request)
ALWAYS_QUIET = ("httpx", "httpcore")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = REDACTOR.scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            document["exception"] = REDACTOR.scrub(record.exc_text)
        return json.dumps(document, ensure_ascii=False)


def worker_debug_requested(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is a faust worker command line with ``-l debug`` (``--loglevel``).

    faust does not hand its ``-l`` option to a ``logging_config``, so the worker's command
    line is read here; only ``debug`` counts (the setting decides every other level).
    """
    args = list(argv[1:])
    if "worker" not in args:
        return False
    for i, arg in enumerate(args):
        if arg in ("-l", "--loglevel") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--loglevel="):
            value = arg.partition("=")[2]
        elif arg.startswith("-l") and len(arg) > 2 and not arg.startswith("--"):
            value = arg[2:]
        else:
            continue
        if value.lower() == "debug":
            return True
    return False


def logging_config(
    level: str, as_json: bool, *, argv: Sequence[str] | None = None
) -> dict[str, Any]:
    """The ``dictConfig`` for ``level`` (``STREAMAPP_LOG_LEVEL``); ``argv`` defaults to
    ``sys.argv`` (``-l debug`` on a worker command line means ``debug``)."""
    if worker_debug_requested(sys.argv if argv is None else argv):
        level = "debug"
    # NOTSET: the library follows the root level (set explicitly, so that a second
    # configuration in the same process undoes the first)
    library = "NOTSET" if level.lower() == "debug" else "WARNING"
    loggers: dict[str, Any] = {name: {"level": library} for name in LIBRARY_LOGGERS}
    loggers.update({name: {"level": "WARNING"} for name in ALWAYS_QUIET})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "streamapp.core.redact.RedactingFilter"}},
        "formatters": {
            "plain": {"format": PLAIN_FORMAT},
            "json": {"()": "streamapp.worker.logsetup.JsonFormatter"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json" if as_json else "plain",
                "filters": ["redact"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
        "loggers": loggers,
    }
