"""Pages of records into the raw topic: the poller's and the backfill's one way to write.

Each page becomes one envelope per record (``streamapp.core.rawtopic``), written through the
worker's one :class:`~streamapp.kafka.publisher.Publisher`. A record the broker will not
take as it is (too large, or refused) is replaced by a rejected envelope, so the rest of its
page and window go on and the checkpoint can move; anything else the broker does not
acknowledge fails the page (PublishError), and the window is walked again later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from streamapp.core.errors import PublishError
from streamapp.core.models import Outgoing, Page
from streamapp.core.rawtopic import page_messages, rejected_message
from streamapp.kafka.publisher import Publisher

#: told, per page, of the records written and of those dead-lettered instead
Counter = Callable[[str, int, int], None]


class RawSink:
    def __init__(
        self,
        publisher: Publisher,
        raw_topic: str,
        *,
        on_page: Counter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.publisher = publisher
        self.raw_topic = raw_topic
        self._on_page = on_page
        self._clock = clock

    def publish(self, source_name: str, page: Page) -> Awaitable[None]:
        return self._deliver(source_name, page)

    async def _deliver(self, source_name: str, page: Page) -> None:
        polled_at = self._clock()
        room = self.publisher.room(self.raw_topic)
        messages = page_messages(
            source_name,
            page.records,
            page.malformed,
            raw_topic=self.raw_topic,
            polled_at=polled_at,
            room=room,
        )

        def substitute(index: int, reason: str) -> Outgoing | None:
            if index >= len(page.records):
                return None  # already a rejected envelope: nothing smaller to send
            record = page.records[index]
            return rejected_message(
                source_name,
                bytes(record.raw),
                reason=reason,
                record_id=record.id,
                raw_topic=self.raw_topic,
                polled_at=polled_at,
                room=room,
            )

        delivery = await self.publisher.deliver(messages, substitute=substitute)
        if delivery.failed:
            first = next(iter(delivery.failed.values()))
            raise PublishError(
                f"the broker did not acknowledge {len(delivery.failed)} of {len(messages)}"
                f" records: {type(first).__name__}"
            )
        if self._on_page is not None:
            rejected = sum(1 for m in messages if m.key and m.key.startswith(b"dlq:"))
            rejected += len(delivery.substituted)
            self._on_page(source_name, len(messages), rejected)
