"""Each queue retries on its own policy: the pipeline's capped backoff, and the webhook
deliveries' schedule from DARKROOM_WEBHOOK_RETRY_SCHEDULE."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import Settings, parse_schedule
from shared.topology import RetryPolicy, Topology

HOUR = 3_600_000


def test_the_default_webhook_schedule_is_eight_attempts_over_a_day() -> None:
    delays = Settings().webhook_retry_delays_ms
    assert delays == (0, 5000, 300_000, 1_800_000, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR)
    policy = RetryPolicy.schedule(delays)
    assert policy.max_attempts == 8
    assert [policy.delay_ms(n) for n in range(1, 8)] == list(delays[1:])


@pytest.mark.parametrize(
    ("text", "delays"),
    [("0", (0,)), ("0, 250ms, 1.5s, 2m, 1d", (0, 250, 1500, 120_000, 86_400_000)), ("3", (3000,))],
)
def test_schedules_read_units_and_bare_seconds(text: str, delays: tuple[int, ...]) -> None:
    assert parse_schedule(text) == delays


@pytest.mark.parametrize("text", ["", "0,", "5x", "-1s", "0,soon"])
def test_a_schedule_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="not a delay"):
        Settings(webhook_retry_schedule=text)


def test_each_queue_declares_the_retry_queues_of_its_own_policy() -> None:
    topology = Topology.from_settings(
        Settings(
            retry_base_ms=100,
            retry_cap_ms=400,
            retry_max_attempts=5,
            webhook_retry_schedule="0,1s,1m,1s",
        )
    )
    assert topology.notifier.retry.delays_ms() == (100, 200, 400)
    assert topology.webhooks.retry.delays_ms() == (1000, 60_000)
    assert topology.webhooks.retry.max_attempts == 4
    names = topology.queue_names()
    assert "darkroom.webhooks.retry.60000" in names
    assert "darkroom.notifier.retry.60000" not in names
    assert "darkroom.notifier.retry.400" in names


def test_exponential_backoff_keeps_its_former_delays() -> None:
    policy = RetryPolicy.exponential(1000, 60_000, 8)
    assert [policy.delay_ms(n) for n in range(1, 8)] == [
        1000, 2000, 4000, 8000, 16_000, 32_000, 60_000
    ]  # fmt: skip
    assert policy.max_attempts == 8
