"""Progress of every source, in one store: poll checkpoints and done backfill windows.

Like Kafka Connect's offsets topic, one compacted topic holds it all, written only after
the broker acknowledged the records it covers: ``<source>`` → the poll checkpoint,
``backfill|<source>|<since>|<until>`` → a backfill window done, ``pause|<token fingerprint>``
→ the end of a pause PagerDuty asked for (a 429's ``ratelimit-reset``), so a restarted or
new leader does not send a request before it. (The checkpoint keys and
values are those the faust table this replaces wrote to the same topic, so an upgrade
resumes where it stopped.) Encoding and decoding live here and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import msgspec

from streamapp.core.models import Checkpoint, WindowDone, rfc3339
from streamapp.kafka.statetopic import StateTopic

log = logging.getLogger("streamapp.progress")

_encode = msgspec.json.Encoder().encode
_decode_checkpoint = msgspec.json.Decoder(Checkpoint).decode
_decode_done = msgspec.json.Decoder(WindowDone).decode
_BACKFILL = b"backfill|"
#: ``pause|<token fingerprint>`` → epoch seconds before which no request may use the token
_PAUSE = b"pause|"


def backfill_key(done: WindowDone) -> bytes:
    return f"backfill|{done.source_name}|{rfc3339(done.since)}|{rfc3339(done.until)}".encode()


def decode_checkpoint(value: bytes | None) -> Checkpoint | None:
    if value is None:
        return None
    try:
        return _decode_checkpoint(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class ProgressTable:
    """The ``ProgressStore`` of ``streamapp.core.ingest`` over a state topic."""

    def __init__(self, table: StateTopic) -> None:
        self.table = table

    def checkpoint(self, source_name: str) -> Checkpoint | None:
        value = self.table.get(source_name.encode())
        checkpoint = decode_checkpoint(value)
        if value is not None and checkpoint is None:
            log.error("checkpoint of source %r is unreadable; starting it afresh", source_name)
        return checkpoint

    async def save_checkpoint(self, source_name: str, checkpoint: Checkpoint) -> None:
        await self.table.put(source_name.encode(), _encode(checkpoint))

    def checkpoints(self) -> Iterator[tuple[str, Checkpoint]]:
        for key, value in self.table.items():
            if b"|" in key:  # backfill windows and pauses (source names have no "|")
                continue
            checkpoint = decode_checkpoint(value)
            if checkpoint is not None:
                yield key.decode(errors="replace"), checkpoint

    def done_windows(self, source_name: str) -> list[WindowDone]:
        prefix = _BACKFILL + source_name.encode() + b"|"
        done = []
        for key, value in self.table.items():
            if not key.startswith(prefix):
                continue
            try:
                item = _decode_done(value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # unreadable progress only means walking that window again
            if item.source_name == source_name and item.since < item.until:
                done.append(item)
        return done

    async def mark_done(self, done: WindowDone) -> None:
        await self.table.put(backfill_key(done), _encode(done))

    def pauses(self) -> Iterator[tuple[str, float]]:
        """(token fingerprint, epoch seconds) of the pauses PagerDuty asked for (a 429)."""
        for key, value in self.table.items():
            if key.startswith(_PAUSE):
                try:
                    yield key[len(_PAUSE) :].decode(), float(value)
                except (UnicodeDecodeError, ValueError):
                    continue

    async def save_pause(self, fingerprint: str, until: float) -> None:
        await self.table.put(_PAUSE + fingerprint.encode(), f"{until:.3f}".encode())
