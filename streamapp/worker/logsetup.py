"""Logging for the worker: secrets redacted on every handler, plain or JSON lines.

Handed to faust as ``logging_config`` so it applies from the worker's first line.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from streamapp.core.redact import REDACTOR

PLAIN_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"


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


def logging_config(level: str, as_json: bool) -> dict[str, Any]:
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
        "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
    }
