"""Gauges of shared state, read when Prometheus scrapes: the outbox and the queue depths.

Each replica reads the same numbers from the same database and broker, so dashboards and
alerts take `max` over replicas. A server that is away leaves the last values standing
(its own readiness check reports the outage).
"""

from __future__ import annotations

from shared.errors import TransientError
from shared.logging import get_logger
from shared.resources import Resources

log = get_logger(__name__)


async def refresh(res: Resources) -> None:
    metrics = res.metrics
    try:
        pending, oldest_s = await res.outbox.backlog()
    except TransientError as exc:
        log.debug("outbox backlog not read", error=str(exc))
    else:
        metrics.outbox_pending.set(pending)
        metrics.outbox_oldest.set(oldest_s)
    for spec in res.topology.all_queues():
        try:
            backlog = await res.broker.backlog(spec, spec.retry.delays_ms())
        except TransientError as exc:
            log.debug("queue depths not read", queue=spec.name, error=str(exc))
            return
        metrics.ready.labels(spec.name).set(backlog.ready)
        metrics.dead_letters.labels(spec.name).set(backlog.dead_letters)
        metrics.retrying.labels(spec.name).set(backlog.retrying)
