"""The SDK's uploads against the whole running system: single and multipart, duplicates,
rejections, batches, and the live event stream."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from darkroom_client import Client, Event, Rejected, Source, UnsupportedType, UploadState, multipart

from shared.settings import MiB, Settings
from tests import images
from tests.client_harness import PartCountingProxy, Stack, stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # the whole system, renders included


@pytest.fixture
async def dr(settings: Settings) -> AsyncIterator[Stack]:
    async with stack(settings.model_copy(update={"multipart_part_size": 5 * MiB})) as running:
        yield running


async def test_upload_waits_for_ready_and_the_same_bytes_again_are_a_duplicate(
    dr: Stack,
) -> None:
    photo = images.jpeg(320, 200)
    seen: list[tuple[int, int]] = []
    async with Client(dr.url, dr.token()) as client:
        ready = await client.upload(photo, filename="beach.jpg", progress=lambda *a: seen.append(a))
        again = await client.upload(photo, filename="beach-copy.jpg")
    assert ready.status == "ready" and ready.filename == "beach.jpg"
    assert ready.raw["renditions"]["thumb"]["width"] > 0
    assert seen[-1] == (len(photo), len(photo))
    assert (again.id, again.duplicate) == (ready.id, True)


async def test_an_upload_url_refused_as_lapsed_is_granted_again(
    settings: Settings, s3_endpoint: str
) -> None:
    proxy = PartCountingProxy(s3_endpoint)
    proxy.refuse_forms = 1
    async with (
        proxy.serving() as s3_url,
        stack(settings.model_copy(update={"s3_endpoint_url": s3_url})) as running,
        Client(running.url, running.token()) as client,
    ):
        photo = await client.upload(images.jpeg(120, 90), filename="late.jpg")
    assert photo.status == "ready"
    assert proxy.refuse_forms == 0


async def test_a_photo_verification_refuses_raises_rejected_with_its_reason(dr: Stack) -> None:
    async with Client(dr.url, dr.token(), use_events=False) as client:
        with pytest.raises(Rejected) as caught:
            await client.upload(b"no image in here" * 10, filename="fake.jpg", method="PUT")
        status = (await client.photo(caught.value.photo_id)).status
    assert caught.value.reason and caught.value.code == caught.value.reason
    assert status == "rejected"


async def test_a_large_file_goes_in_parts_and_its_state_can_resume_it(dr: Stack) -> None:
    data = images.noise_png(1400, 1300)  # 5.46 MB: two parts of 5 MiB
    states: list[dict[str, Any]] = []
    sent: list[int] = []
    async with Client(dr.url, dr.token()) as client:
        photo = await client.upload(
            data,
            filename="wide.png",
            multipart_threshold=1 * MiB,
            on_state=lambda s: states.append(s.to_json()),
            progress=lambda n, total: sent.append(n),
        )
    assert photo.status == "ready"
    assert states[0]["part_count"] == 2 and states[0]["etags"] == {}
    assert set(states[-1]["etags"]) == {"1", "2"}
    assert sent[-1] == len(data)
    assert UploadState.from_json(states[-1]).missing == []


async def test_resuming_a_state_sends_only_the_parts_storage_lacks(dr: Stack) -> None:
    """A first client sends part 1 and stops; a second resumes from the saved state."""
    data = images.noise_png(1400, 1300, seed=3)
    async with Client(dr.url, dr.token()) as first:
        body = {"filename": "w.png", "content_type": "image/png", "size": len(data)}
        grant = (
            await first.transport.api("POST", "/v1/uploads", json={**body, "multipart": True})
        ).body
        state = UploadState(
            photo_id=grant["photo_id"],
            upload_id=grant["upload"]["upload_id"],
            part_size=grant["upload"]["part_size"],
            part_count=grant["upload"]["part_count"],
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        signed = (
            await first.transport.api(
                "POST", f"/v1/uploads/{state.photo_id}/parts", json={"part_numbers": [1]}
            )
        ).body["parts"][0]
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                signed["url"], data=data[: state.part_size], headers=signed["headers"]
            ) as resp,
        ):
            assert resp.status == 200
    progress: list[int] = []
    async with Client(dr.url, dr.token()) as second:
        photo = await second.upload(
            data, filename="w.png", resume=state, progress=lambda n, _: progress.append(n)
        )
    assert photo.id == state.photo_id and photo.status == "ready"
    # Part 1 was counted as sent from the start: only part 2's bytes went out.
    assert progress[0] == state.part_size


async def test_resuming_an_upload_whose_completion_answer_was_lost_finishes_it(
    dr: Stack,
) -> None:
    """Every part sent and completed, but the answer never came back: resuming the saved
    state completes nothing twice and waits for the same photo."""
    data = images.noise_png(1400, 1300, seed=5)
    states: list[UploadState] = []
    async with Client(dr.url, dr.token()) as first:
        grant = await first.transport.api(
            "POST",
            "/v1/uploads",
            json={
                "filename": "w.png",
                "content_type": "image/png",
                "size": len(data),
                "multipart": True,
                "sha256": hashlib.sha256(data).hexdigest(),
            },
        )
        source = await Source.of(data, filename="w.png")
        state = multipart.state_of(source, grant.body)
        await multipart.send_parts(first.transport, source, state, on_state=states.append)
        await multipart.complete(first.transport, state)  # its answer "lost"
    async with Client(dr.url, dr.token()) as second:
        photo = await second.upload(data, filename="w.png", resume=states[-1])
    assert (photo.id, photo.status) == (state.photo_id, "ready")


async def test_upload_many_grants_in_batches_of_50_and_reports_each_outcome(
    dr: Stack,
) -> None:
    batches: list[int] = []

    async def on_request(
        _: Any, __: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        if params.url.path.endswith("/v1/uploads:batch"):
            batches.append(params.method == "POST")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request)
    broken = await Source.of(b"no image" * 9, filename="broken.jpg")
    items: list[bytes | Source] = [images.jpeg(16 + n, 12) for n in range(50)]
    items += [broken, b"plain text, of no accepted type", images.jpeg(99, 12)]
    async with (
        aiohttp.ClientSession(trace_configs=[trace]) as http,
        Client(dr.url, dr.token(), session=http) as client,
    ):
        outcomes = await client.upload_many(items, concurrency=8)
    # The second batch is refused for its text item, which fails alone; the rest is
    # asked for again.
    assert len(batches) == 3
    assert [o.photo is not None for o in outcomes] == [True] * 50 + [False, False, True]
    assert isinstance(outcomes[50].error, Rejected)
    assert isinstance(outcomes[51].error, UnsupportedType)
    assert outcomes[51].error.code == "unsupported_type"


async def test_events_stream_photo_outcomes_and_resume_after_the_last_event_id(
    dr: Stack,
) -> None:
    async with Client(dr.url, dr.token()) as client:
        received: asyncio.Queue[Event] = asyncio.Queue()

        async def listen() -> None:
            async for event in client.events():
                await received.put(event)

        listener = asyncio.create_task(listen())
        first = await client.upload(images.jpeg(100, 80), filename="one.jpg")
        ready = await asyncio.wait_for(received.get(), 60)
        second = await client.upload(images.jpeg(90, 70), filename="two.jpg")
        after = await asyncio.wait_for(received.get(), 60)
        listener.cancel()
        assert (ready.type, ready.data["photo_id"]) == ("photo.ready", first.id)
        assert (after.type, after.data["photo_id"]) == ("photo.ready", second.id)
        # A new stream from the first event's id starts with what came after it.
        resumed = client.events(last_event_id=ready.id)
        replayed = await asyncio.wait_for(anext(resumed), 60)
        await resumed.aclose()
    assert replayed.id == after.id
