"""The chaos run's judgement of users' endpoints: at-least-once delivery may repeat a
webhook only when a notifier was lost between the answer and its record."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from chaos import webhooks
from chaos.webhooks import Receiver, Subscribers, new_secret, serve
from services.notifier.webhooks import deliver, secret_key

PHOTO, USER = "p" * 32, "alice"


def acked(*times: float, ids: tuple[str, ...] = ("msg_1",)) -> Subscribers:
    found = Subscribers()
    for msg_id in ids:
        found.ready[USER][PHOTO].add(msg_id)
    found.acks[(USER, ids[0])].extend(times)
    return found


def test_one_acknowledgement_is_neither_missed_nor_repeated() -> None:
    assert acked(1.0).check({PHOTO: USER}, kills=[]) == (0, 0)


def test_an_acknowledgement_again_with_no_kill_between_is_a_repeat() -> None:
    assert acked(1.0, 2.0).check({PHOTO: USER}, kills=[0.5, 2.5]) == (0, 1)


def test_an_acknowledgement_again_after_the_notifier_was_killed_is_excused() -> None:
    assert acked(1.0, 2.0).check({PHOTO: USER}, kills=[1.5]) == (0, 0)


def test_one_photo_under_two_event_ids_is_a_repeat_whatever_was_killed() -> None:
    found = acked(1.0, ids=("msg_1", "msg_2"))
    assert found.check({PHOTO: USER}, kills=[0.5, 1.5]) == (0, 1)


def test_a_photo_never_acknowledged_is_missed() -> None:
    assert Subscribers().check({PHOTO: USER}, kills=[]) == (1, 0)


def test_a_photo_that_arrived_only_while_its_caller_was_gone_is_missed() -> None:
    found = acked()  # its event id came, but no answer reached a live notifier
    assert found.check({PHOTO: USER}, kills=[]) == (1, 0)


def test_overlapping_deliveries_are_judged_in_the_order_they_arrived() -> None:
    # the later delivery (arrived 2.0) was answered first, so recorded first
    assert acked(2.0, 1.0).check({PHOTO: USER}, kills=[1.5]) == (0, 0)


async def test_an_acknowledged_delivery_is_dated_by_its_arrival_not_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "LATENCY_S", (0.3, 0.3))
    subscribers = Subscribers()
    runner = await serve(Receiver(secret=new_secret()), subscribers)
    subscribers.secrets[USER] = secret = new_secret()
    body = json.dumps({"type": "photo.ready", "data": {"photo_id": PHOTO}}).encode()
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as session:
            sent = loop.time()
            answer = await deliver(
                session, subscribers.url(USER), [secret_key(secret)], "msg_1", body, timeout=5
            )
            answered = loop.time()
    finally:
        await runner.cleanup()
    assert answer.status == 204
    [arrived] = subscribers.acks[(USER, "msg_1")]
    assert sent <= arrived < answered - 0.3
