"""Every exchange, queue, binding, retry and dead-letter name in one place.

    <p>.events   topic  Darkroom's own events; routing key = event type
    <p>.storage  topic  S3 notifications from MinIO / Ceph (and the SQS bridge)
    <p>.dlx      direct dead letters; routing key = the queue they came from
    <queue>.retry direct, one per consumer queue: its retry queues, by name

Each consumer owns one durable quorum queue with a delivery limit, dead-lettering to
`<queue>.dlq`. Retries go through `<queue>.retry.<ms>` (published via `<queue>.retry`),
one per delay of that queue's own retry policy:
classic durable queues with a fixed message TTL that dead-letter back into the
consumer's queue. One queue per delay
keeps expiry exact (a per-message TTL only expires at a queue's head).

`p` is `DARKROOM_TOPOLOGY_PREFIX` (default `darkroom`); tests use their own prefix so
they never share queues with anything else on the broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed message is tried again: after attempt n fails it waits `delays[n-1]`
    ms; after attempt `max_attempts` (one more than there are delays) it is parked."""

    delays: tuple[int, ...]

    @classmethod
    def exponential(cls, base_ms: int, cap_ms: int, max_attempts: int) -> RetryPolicy:
        """Capped exponential backoff: attempt n waits min(base * 2**(n-1), cap)."""
        return cls(tuple(min(base_ms * 2 ** (n - 1), cap_ms) for n in range(1, max_attempts)))

    @classmethod
    def schedule(cls, attempt_delays_ms: tuple[int, ...]) -> RetryPolicy:
        """From each attempt's delay, the first's (0: at once) included: "0,5s,5m" is
        three attempts, the second 5 s after the first failed, the third 5 min later."""
        return cls(attempt_delays_ms[1:])

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1

    def delay_ms(self, attempt: int) -> int:
        if not self.delays:
            return 0
        return self.delays[min(attempt, len(self.delays)) - 1]

    def delays_ms(self) -> tuple[int, ...]:
        """Every distinct delay the policy can ask for (one retry queue each)."""
        return tuple(sorted(set(self.delays)))


@dataclass(frozen=True)
class QueueSpec:
    name: str
    exchange: str
    routing_keys: tuple[str, ...]
    dead_letter_exchange: str
    # Each queue retries on its own schedule (webhooks for hours, the pipeline for minutes).
    retry: RetryPolicy = RetryPolicy(())
    # Deliveries handed out at once to one consumer; None: the broker's setting.
    prefetch: int | None = None

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"

    @property
    def retry_exchange(self) -> str:
        """Direct exchange of this queue's retry queues (routing key: the retry queue).
        One per consumer queue, so permission to retry one queue's messages is not
        permission to publish into another (the default exchange reaches every queue)."""
        return f"{self.name}.retry"

    def retry_queue(self, delay_ms: int) -> str:
        return f"{self.name}.retry.{delay_ms}"


@dataclass(frozen=True)
class Topology:
    prefix: str
    delivery_limit: int
    retry: RetryPolicy
    # Deliveries to webhook endpoints: their own schedule (hours), and many at once so a
    # hanging endpoint holds only its own slots.
    webhook_retry: RetryPolicy = RetryPolicy(())
    webhook_prefetch: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            prefix=settings.topology_prefix,
            delivery_limit=settings.delivery_limit,
            retry=RetryPolicy.exponential(
                settings.retry_base_ms, settings.retry_cap_ms, settings.retry_max_attempts
            ),
            webhook_retry=RetryPolicy.schedule(settings.webhook_retry_delays_ms),
            webhook_prefetch=settings.webhook_concurrency,
        )

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def storage_exchange(self) -> str:
        return f"{self.prefix}.storage"

    # Routing key of AWS S3 notifications the SQS bridge moves onto the storage exchange.
    sqs_bridge_routing_key = "aws.sqs"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    def _queue(self, name: str, exchange: str, *routing_keys: str) -> QueueSpec:
        return QueueSpec(
            f"{self.prefix}.{name}", exchange, routing_keys, self.dead_letter_exchange, self.retry
        )

    # One queue per consumer. Add a consumer here, never inline in a service.
    @property
    def ingest_intents(self) -> QueueSpec:
        return self._queue(
            "ingest.intents",
            self.events_exchange,
            "upload.completed",
            "photo.deleted",
            "account.deleted",
        )

    @property
    def ingest_storage(self) -> QueueSpec:
        return self._queue("ingest.storage", self.storage_exchange, "#")

    @property
    def thumbnail(self) -> QueueSpec:
        return self._queue("thumbnail", self.events_exchange, "photo.verified")

    @property
    def notifier(self) -> QueueSpec:
        return self._queue(
            "notifier",
            self.events_exchange,
            "photo.ready",
            "photo.rejected",
            "photo.deleted",
            "album.revealed",
            "album.member_added",
            "album.deleted",
        )

    # Routing key of one delivery to one webhook endpoint (services/notifier/fanout.py).
    webhook_delivery_key = "webhook.delivery"

    @property
    def webhooks(self) -> QueueSpec:
        """Deliveries to webhook endpoints, one message each, on the webhook schedule."""
        return QueueSpec(
            f"{self.prefix}.webhooks",
            self.events_exchange,
            (self.webhook_delivery_key,),
            self.dead_letter_exchange,
            self.webhook_retry,
            self.webhook_prefetch,
        )

    # Each gateway replica's own queue of the events its live streams carry, and of
    # account.deleted, which makes it forget the users it recorded: declared by the
    # replica and gone with it, so never in `all_queues()`.
    @property
    def live_events_prefix(self) -> str:
        return f"{self.prefix}.live."

    def live_events(self, replica: str) -> QueueSpec:
        return self._queue(
            f"live.{replica}",
            self.events_exchange,
            "photo.ready",
            "photo.rejected",
            "photo.deleted",
            "album.revealed",
            "album.member_added",
            "album.deleted",
            "account.deleted",
        )

    @property
    def mail(self) -> QueueSpec:
        """The mail sender: events that mail people are fanned out here into one
        mail.requested per recipient, so each mail is sent, retried and parked alone,
        on the webhook schedule: a mail server down for hours still gets the mail."""
        return QueueSpec(
            f"{self.prefix}.notifier.mail",
            self.events_exchange,
            (
                "user.created",
                "album.member_added",
                "album.revealed",
                "webhook.disabled",
                "mail.requested",
            ),
            self.dead_letter_exchange,
            self.webhook_retry,
        )

    def exchange_names(self) -> tuple[str, ...]:
        retries = tuple(spec.retry_exchange for spec in self.all_queues())
        return (self.events_exchange, self.storage_exchange, self.dead_letter_exchange, *retries)

    def queue_names(self) -> list[str]:
        """Every queue declared: each consumer's, its dead-letter and its retry queues."""
        names: list[str] = []
        for spec in self.all_queues():
            names += [spec.name, spec.dead_letter_queue]
            names += [spec.retry_queue(d) for d in spec.retry.delays_ms()]
        return names

    def all_queues(self) -> tuple[QueueSpec, ...]:
        return (
            self.ingest_intents,
            self.ingest_storage,
            self.thumbnail,
            self.notifier,
            self.webhooks,
            self.mail,
        )
