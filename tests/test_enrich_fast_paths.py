"""The enrichment's fast paths give exactly what the plain ways gave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from streamapp.core.enrich import enrich, timestamp


def _by_hand(moment: datetime) -> str:
    """The formatting ``timestamp`` used before it let ``isoformat`` do the work."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    fraction = (
        f"{moment.microsecond // 1000:03d}"
        if moment.microsecond % 1000 == 0
        else f"{moment.microsecond:06d}"
    )
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{fraction}Z"
    )


offsets = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)
moments = st.builds(
    lambda naive, tz: naive.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    offsets,
)


@given(moments)
def test_timestamp_is_the_text_it_always_was(moment: datetime) -> None:
    assert timestamp(moment) == _by_hand(moment)


def test_timestamp_keeps_four_digit_years_and_sub_millisecond_parts() -> None:
    assert timestamp(datetime(999, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)) == (
        "0999-01-02T03:04:05.120Z"
    )
    assert timestamp(datetime(2026, 1, 2, 3, 4, 5, 120001, tzinfo=UTC)) == (
        "2026-01-02T03:04:05.120001Z"
    )


RECORD = {
    "id": "PXYZ1",
    "execution_time": "2026-11-27T06:00:00.000Z",
    "method": {"type": "api_token", "truncated_token": "abcd"},
    "root_resource": {"id": "PU1", "type": "user_reference", "summary": "Ann"},
    "action": "update",
}


@given(
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"id": st.text(max_size=5), "type": st.sampled_from(["user_reference", 3])},
                optional={"summary": st.one_of(st.text(max_size=5), st.none())},
            ),
            st.integers(),
            st.text(max_size=3),
            st.none(),
        ),
        max_size=4,
    )
)
def test_actors_decoded_at_once_or_one_by_one_are_the_same(actors: list[object]) -> None:
    """A list of references takes one decode; anything odd in it falls back to reading the
    actors one by one, which names each one it skips."""
    document = enrich(
        msgspec.json.encode({**RECORD, "actors": actors}),
        source_name="prod",
        ingested_at=datetime(2026, 11, 27, 6, 0, 1, tzinfo=UTC),
    )
    readable = [a for a in actors if isinstance(a, dict)]
    assert [(a.id, a.type, a.name) for a in document.actors] == [
        (a["id"], "user" if a["type"] == "user_reference" else None, a.get("summary"))
        for a in readable
    ]
    skipped = [w for w in document.warnings if w.startswith("actors[")]
    assert len(skipped) == len(actors) - len(readable)
