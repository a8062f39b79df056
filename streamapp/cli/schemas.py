"""JSON Schema files of the documents on our topics, generated from the msgspec models.

    python -m streamapp.cli.schemas            # (re)write schemas/*.schema.json
    python -m streamapp.cli.schemas --check    # exit 1, naming each file, when one is stale
    python -m streamapp.cli.schemas DIR        # another directory

The files are generated, never edited by hand: a test runs ``--check`` so a model change
that is not reflected in the committed files fails the build. Output is stable (sorted
keys, two-space indent, trailing newline) so diffs show only real changes.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from streamapp.core.deadletter import DeadLetter
from streamapp.core.detect import Finding
from streamapp.core.ecs import EcsDocument
from streamapp.core.health import Notification
from streamapp.core.models import RawEnvelope
from streamapp.core.output import OcsfDocument, OutputDocument

DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"

#: file name → (model, what the document is)
SCHEMAS: Final[dict[str, tuple[Any, str]]] = {
    "pagerduty_audit_logs.schema.json": (
        OutputDocument,
        "A PagerDuty audit record, enriched: the value on pagerduty_audit_logs.",
    ),
    "pagerduty_audit_logs.ocsf.schema.json": (
        OcsfDocument,
        "A PagerDuty audit record as an OCSF 1.4.0 event (optional rendering).",
    ),
    "pagerduty_audit_logs_raw.schema.json": (
        RawEnvelope,
        "An audit record as polled: the value on pagerduty_audit_logs_raw (internal).",
    ),
    "pagerduty_audit_logs_dlq.schema.json": (
        DeadLetter,
        "What could not be processed, with the reason and the original bytes: "
        "the value on pagerduty_audit_logs_dlq.",
    ),
    "pagerduty_audit_logs.ecs.schema.json": (
        EcsDocument,
        "A PagerDuty audit record as an Elastic Common Schema 9.4.0 document (optional "
        "rendering); event.id is the record id.",
    ),
    "pagerduty_audit_findings.schema.json": (
        Finding,
        "A detection: the value on pagerduty_audit_findings.",
    ),
    "notifications.schema.json": (
        Notification,
        "A health alert, a detection worth a channel, or a test: the value on notifications.",
    ),
}

DEFAULT_DIR: Final = Path(__file__).resolve().parents[2] / "schemas"


def render(model: Any, description: str) -> str:
    """The file text for one model: its JSON Schema, stable and newline-terminated."""
    schema: dict[str, Any] = {"$schema": DRAFT, "description": description}
    schema.update(msgspec.json.schema(model))
    return json.dumps(_clean(schema), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _clean(node: Any) -> Any:
    """Every ``description`` dedented as ``inspect.cleandoc`` does: msgspec 0.23 cleans the
    docstrings it copies and earlier versions do not, so the files stay the same on both."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean(item) for item in node]
    return node


def rendered() -> dict[str, str]:
    return {name: render(model, about) for name, (model, about) in SCHEMAS.items()}


def write(directory: Path) -> list[Path]:
    """Write every schema file into ``directory``; return the paths that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in rendered().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def stale(directory: Path) -> list[Path]:
    """The schema files in ``directory`` that are missing or differ from the models."""
    out = []
    for name, text in rendered().items():
        path = directory / name
        try:
            current = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text:
            out.append(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamapp.cli.schemas", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--check", action="store_true", help="fail when a file is stale")
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    if args.check:
        bad = stale(args.directory)
        for path in bad:
            print(
                f"{path}: out of date with the models; run: python -m streamapp.cli.schemas",
                file=sys.stderr,
            )
        return 1 if bad else 0
    for path in write(args.directory):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
