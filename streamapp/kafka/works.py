"""What the worker's two consumer loops do with a batch: the glue between the pure core
and the loop (``streamapp.kafka.pipeline_loop``).

- :class:`RawWork`: the raw topic → the pipeline's decisions (``core.pipeline.Processor``),
  its ids remembered in the dedupe store;
- :class:`DetectWork`: the detections' keyed topic → the rules' state machines
  (``core.detect.stream``), their state in a store of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from streamapp.core.detect import expire
from streamapp.core.detect.stream import DetectionFanout, StepPlan
from streamapp.core.models import Outgoing
from streamapp.core.pipeline import BatchResult, Incoming, Processor
from streamapp.kafka.seen import KEEP, PartitionedStore, SeenStore


class RawWork:
    def __init__(
        self,
        processor: Processor,
        seen: SeenStore,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> None:
        self.processor = processor
        self.store: PartitionedStore = seen
        self._seen = seen
        self._on_batch = on_batch
        #: keys of batches decided but not yet remembered (a batch overlaps the one before)
        self._pending: set[tuple[bytes, int]] = set()

    def _contains(self, key: bytes, partition: int) -> bool:
        return (key, partition) in self._pending or self._seen.contains(key, partition)

    def plan(self, batch: Sequence[Incoming]) -> BatchResult:
        result = self.processor.process(batch, self._contains)
        self._pending.update(result.fresh)
        return result

    def dead_letter_for(self, message: Incoming, reason: str) -> Outgoing:
        return self.processor.dead_letter_for(message, reason)

    async def remember(self, planned: BatchResult) -> None:
        await self._seen.add(planned.fresh)
        self._pending.difference_update(planned.fresh)

    def done(self, planned: BatchResult) -> None:
        if self._on_batch is not None:
            self._on_batch(planned)

    async def sweep(self, retention: float) -> int:
        return await self._seen.expire(retention)


class DetectWork:
    def __init__(
        self,
        fanout: DetectionFanout,
        store: PartitionedStore,
        on_findings: Callable[[StepPlan], None] | None = None,
    ) -> None:
        self.fanout = fanout
        self.store = store
        self._on_findings = on_findings
        #: states decided by a batch not yet remembered (a batch overlaps the one before)
        self._pending: dict[tuple[bytes, int], bytes | None] = {}

    def _state(self, key: bytes, partition: int) -> bytes | None:
        slot = (key, partition)
        return self._pending[slot] if slot in self._pending else self.store.get(key, partition)

    def plan(self, batch: Sequence[Incoming]) -> StepPlan:
        planned = self.fanout.step_batch(batch, self._state)
        self._pending.update(planned.writes)
        return planned

    def dead_letter_for(self, message: Incoming, reason: str) -> Outgoing:
        return self.fanout.dead_letter_for(message, reason)

    async def remember(self, planned: StepPlan) -> None:
        await self.store.write([(key, p, value) for (key, p), value in planned.writes.items()])
        for slot, value in planned.writes.items():
            if slot in self._pending and self._pending[slot] is value:
                del self._pending[slot]  # a later batch's newer state stays pending

    def done(self, planned: StepPlan) -> None:
        if self._on_findings is not None:
            self._on_findings(planned)

    async def sweep(self, now: float | None = None) -> int:
        """Expire rule state older than each rule's window or retention."""
        moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)

        def decide(key: bytes, value: bytes) -> object:
            kept = expire(value, moment)
            return KEEP if kept is value else kept

        return await self.store.sweep(decide)
