from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from streamapp.cli import schemas
from streamapp.core.deadletter import dead_letter
from streamapp.core.models import RawEnvelope

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "schemas"
GOLDEN = Path(__file__).parent / "golden"


def test_committed_schema_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamapp.cli.schemas", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_check_fails_and_names_the_file_after_a_change(tmp_path: Path) -> None:
    for name in schemas.SCHEMAS:
        shutil.copy(COMMITTED / name, tmp_path / name)
    assert schemas.main(["--check", str(tmp_path)]) == 0

    changed = tmp_path / "pagerduty_audit_logs.schema.json"
    changed.write_text(changed.read_text().replace('"string"', '"integer"', 1))
    (tmp_path / "pagerduty_audit_logs_dlq.schema.json").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "streamapp.cli.schemas", "--check", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert str(changed) in result.stderr
    assert "pagerduty_audit_logs_dlq.schema.json" in result.stderr
    assert "pagerduty_audit_logs_raw.schema.json" not in result.stderr


def test_write_is_stable(tmp_path: Path) -> None:
    assert len(schemas.write(tmp_path)) == len(schemas.SCHEMAS)
    assert schemas.write(tmp_path) == []
    for name in schemas.SCHEMAS:
        text = (tmp_path / name).read_text()
        assert text.endswith("}\n")
        assert (
            text
            == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        )


jsonschema = pytest.importorskip("jsonschema")


def validator(name: str) -> object:
    schema = json.loads((COMMITTED / name).read_text())
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(
    ("schema_name", "folder"),
    [
        ("pagerduty_audit_logs.schema.json", GOLDEN),
        ("pagerduty_audit_logs.ocsf.schema.json", GOLDEN / "ocsf"),
    ],
)
def test_golden_documents_validate_against_their_schema(schema_name: str, folder: Path) -> None:
    check = validator(schema_name)
    documents = sorted(folder.glob("*.json"))
    assert len(documents) >= 12
    for path in documents:
        check.validate(json.loads(path.read_text()))  # type: ignore[attr-defined]


def test_a_wrong_document_does_not_validate() -> None:
    document = json.loads((GOLDEN / "team_create.json").read_text())
    del document["event_name"]
    assert not validator("pagerduty_audit_logs.schema.json").is_valid(document)  # type: ignore[attr-defined]


def test_dead_letters_and_raw_envelopes_validate() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    letter = dead_letter(b"\xff{", reason="not JSON", stage="enrich", source_name="x", at=at)
    envelope = RawEnvelope(source_name="x", polled_at=at, record=msgspec.Raw(b'{"id":"R"}'))
    for name, value in (
        ("pagerduty_audit_logs_dlq.schema.json", letter),
        ("pagerduty_audit_logs_raw.schema.json", envelope),
    ):
        validator(name).validate(json.loads(msgspec.json.encode(value)))  # type: ignore[attr-defined]
