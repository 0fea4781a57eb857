"""Prometheus metrics. One `Metrics` per process, created with the resources and passed
down; served on the health port (shared/health.py), never on the public API port.

Names follow Prometheus conventions: base units (seconds, bytes), `_total` counters,
histograms for durations. Gauges that describe shared state (the outbox, queue depths)
are refreshed at scrape time by `shared.backlog`, so every replica reports the same
value: aggregate them with `max`, not `sum`.
"""

from __future__ import annotations

import importlib.metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Request latencies: the API answers in milliseconds; presigning or a slow database
# stretch that to seconds, and anything past 10 s has already failed its client.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Handler durations run from a duplicate notification (milliseconds) to a 40 MP render
# (seconds); the last buckets reach the handler timeout, so a handler that is killed by it
# still lands in a bucket of its own instead of +Inf only.
_HANDLER_BASE = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def handler_buckets(timeout_s: float) -> tuple[float, ...]:
    below = tuple(b for b in _HANDLER_BASE if b < timeout_s)
    return (*below, float(timeout_s))


def version() -> str:
    try:
        return importlib.metadata.version("darkroom")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RenderMemory:
    """Bytes the renderer has reserved against its memory budget. The renderer calls
    `set_budget` once and `set_reserved` whenever its reservations change."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._reserved = Gauge(
            "darkroom_render_memory_reserved_bytes",
            "Bytes reserved by renders in progress",
            registry=registry,
        )
        self._budget = Gauge(
            "darkroom_render_memory_budget_bytes",
            "Render memory budget (DARKROOM_RENDER_MEMORY_MB)",
            registry=registry,
        )

    def set_budget(self, n_bytes: int) -> None:
        self._budget.set(n_bytes)

    def set_reserved(self, n_bytes: int) -> None:
        self._reserved.set(n_bytes)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, handler_timeout: float = 300.0) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Gauge("darkroom_build_info", "The running build", ["version"], registry=r).labels(
            version()
        ).set(1)
        # Messages and handlers.
        self.messages = Counter(
            "darkroom_messages_total", "Messages settled, by queue and outcome",
            ["queue", "outcome"], registry=r,
        )  # fmt: skip
        self.handler_seconds = Histogram(
            "darkroom_handler_duration_seconds", "Time spent in a message handler",
            ["queue"], buckets=handler_buckets(handler_timeout), registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "darkroom_messages_in_flight", "Messages this replica holds unacknowledged",
            ["queue"], registry=r,
        )  # fmt: skip
        # HTTP.
        self.http_seconds = Histogram(
            "darkroom_http_request_duration_seconds", "Gateway requests, by route and status",
            ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=r,
        )  # fmt: skip
        # Outcomes.
        self.photos = Counter(
            "darkroom_photos_total", "Photos reaching a final state", ["status"], registry=r
        )
        self.rejections = Counter(
            "darkroom_rejections_total", "Photos rejected, by reason code", ["reason"], registry=r
        )
        self.webhooks = Counter(
            "darkroom_webhook_attempts_total",
            "Webhook delivery attempts, by outcome (delivered, refused, unreachable, forbidden)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.mails = Counter(
            "darkroom_mail_attempts_total",
            "Mail sending attempts, by outcome (sent, duplicate, refused, failed)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.render_memory = RenderMemory(r)
        # Live event streams (the gateway's GET /v1/events).
        self.event_streams = Gauge(
            "darkroom_event_streams", "Live event streams open on this replica", registry=r
        )
        self.event_stream_resets = Counter(
            "darkroom_event_stream_resets_total",
            "Resets sent on live event streams (events may have been missed), by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        # Shared state, refreshed at scrape time (shared/backlog.py).
        self.outbox_pending = Gauge(
            "darkroom_outbox_pending_events", "Events stored but not yet published", registry=r
        )
        self.outbox_oldest = Gauge(
            "darkroom_outbox_oldest_age_seconds", "Age of the oldest unpublished event",
            registry=r,
        )  # fmt: skip
        self.ready = Gauge(
            "darkroom_queue_ready_messages", "Messages waiting in a consumer queue",
            ["queue"], registry=r,
        )  # fmt: skip
        self.dead_letters = Gauge(
            "darkroom_dead_letter_messages", "Messages parked in a queue's dead-letter queue",
            ["queue"], registry=r,
        )  # fmt: skip
        self.retrying = Gauge(
            "darkroom_retry_messages", "Messages waiting out a retry delay", ["queue"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
