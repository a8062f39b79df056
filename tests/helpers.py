"""Small helpers more than one test module uses (Kafka ones are in ``kafka_harness``)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from streamapp.devtools.simulator import generate_records


def edited(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``changes``; a change to ``...`` drops that key."""
    result = copy.deepcopy(dict(base))
    for name, value in changes.items():
        if value is ...:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def frameworks_imported_by(module: str) -> list[str]:
    """The modules of faust, aiokafka, httpx or mode that importing ``module`` loads (in a
    fresh interpreter): none for the parts of the app meant to stay free of them."""
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'faust', 'aiokafka', 'httpx', 'mode'})\n"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return [name for name in result.stdout.strip().split(",") if name]


def toml_value(value: Any) -> str:
    """``value`` as inline TOML (enough for these tests: no dates)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    items = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
    return "{ " + items + " }" if items else "{}"


def toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def toml_document(**tables: Any) -> str:
    """A TOML document of top-level keys, each value inline."""
    return "\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in tables.items()) + "\n"


def fresh_record(seed: int) -> dict[str, Any]:
    """One generated record executed within the last second."""
    now = datetime.now(UTC)
    (record,) = generate_records(1, start=now - timedelta(seconds=1), end=now, seed=seed)
    return record
