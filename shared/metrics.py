"""Prometheus metrics. One `Metrics` per process, created by the entry point and passed down."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "darkroom_messages_total",
            "Messages settled, by queue and outcome",
            ["queue", "outcome"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "darkroom_handler_seconds",
            "Time spent in a message handler",
            ["queue"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "darkroom_http_requests_total",
            "Gateway requests, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.photos = Counter(
            "darkroom_photos_total",
            "Photos reaching a final state",
            ["status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
