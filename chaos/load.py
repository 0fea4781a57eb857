"""The app's clients: ask the gateway for a grant (bearer JWT), upload with the presigned
POST straight to storage, sometimes send the completion hint. Retries what a real client
would retry (503 with Retry-After, 429, a dropped connection)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from chaos.corpus import Sample

GRANT_DEADLINE_S = 60.0
HINT_RATE = 0.2
BURST = 8


@dataclass
class Upload:
    index: int
    sample: Sample
    user: str
    photo_id: str = ""
    key: str = ""
    uploaded: bool = False
    failure: str = ""


class GiveUp(Exception):
    pass


class Client:
    def __init__(self, http: aiohttp.ClientSession, base: str, tokens: dict[str, str]) -> None:
        self.http = http
        self.base = base
        self._tokens = tokens

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens[user]}"}

    async def register_webhook(self, user: str, url: str) -> str:
        """A photo.ready endpoint of `user`'s; its signing secret."""
        body = {"url": url, "events": ["photo.ready"], "description": "chaos"}
        async with self.http.post(
            f"{self.base}/v1/webhooks", json=body, headers=self.headers(user)
        ) as resp:
            if resp.status != 201:
                raise GiveUp(f"webhook registration answered {resp.status}: {await resp.text()}")
            secret: str = (await resp.json())["secret"]
            return secret

    async def grant(self, upload: Upload) -> dict[str, Any]:
        sample = upload.sample
        body = {
            "filename": "photo.jpg",
            "content_type": sample.content_type,
            "size": len(sample.data),
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GRANT_DEADLINE_S
        pause = 0.2
        while loop.time() < deadline:
            try:
                async with self.http.post(
                    f"{self.base}/v1/uploads", json=body, headers=self.headers(upload.user)
                ) as resp:
                    if resp.status == 201:
                        grant: dict[str, Any] = await resp.json()
                        return grant
                    if resp.status not in (429, 503):
                        raise GiveUp(f"grant answered {resp.status}: {await resp.text()}")
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
        raise GiveUp("no grant within the deadline")

    async def put_bytes(self, grant: dict[str, Any], sample: Sample) -> None:
        upload = grant["upload"]
        for attempt in range(5):
            form = aiohttp.FormData(quote_fields=False)
            for name, value in upload["fields"].items():
                form.add_field(name, value)
            form.add_field("file", sample.data, filename="photo", content_type=sample.content_type)
            try:
                async with self.http.post(upload["url"], data=form) as resp:
                    if resp.status in (200, 201, 204):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2 * (attempt + 1))
        raise GiveUp("storage refused the upload 5 times")

    async def hint(self, upload: Upload) -> None:
        url = f"{self.base}/v1/uploads/{upload.photo_id}/complete"
        try:
            async with self.http.post(url, headers=self.headers(upload.user)) as resp:
                await resp.read()
        except aiohttp.ClientError:
            pass  # only a hint

    async def photo(self, upload: Upload) -> dict[str, Any] | None:
        url = f"{self.base}/v1/photos/{upload.photo_id}"
        try:
            async with self.http.get(url, headers=self.headers(upload.user)) as resp:
                if resp.status != 200:
                    return None
                view: dict[str, Any] = await resp.json()
                return view
        except aiohttp.ClientError:
            return None


# Called between the grant and the upload, and after the upload (storage events).
Hook = Callable[[Upload], Awaitable[None]]


async def perform(
    client: Client, upload: Upload, rng: random.Random, before: Hook, after: Hook
) -> None:
    try:
        grant = await client.grant(upload)
        upload.photo_id = grant["photo_id"]
        upload.key = grant["upload"]["fields"]["key"]
        await before(upload)
        await client.put_bytes(grant, upload.sample)
        upload.uploaded = True
        await after(upload)
        if rng.random() < HINT_RATE:
            await client.hint(upload)
    except GiveUp as exc:
        upload.failure = str(exc)


async def run_load(
    client: Client,
    uploads: list[Upload],
    *,
    rate: float,
    concurrency: int,
    rng: random.Random,
    before: Hook,
    after: Hook,
) -> None:
    """Start uploads at `rate` per second on average, in bursts (so the workers have
    queues to be killed in the middle of), at most `concurrency` at once."""
    slots = asyncio.Semaphore(concurrency)

    async def one(upload: Upload) -> None:
        async with slots:
            await perform(client, upload, rng, before, after)

    tasks = []
    for start in range(0, len(uploads), BURST):
        burst = uploads[start : start + BURST]
        tasks += [asyncio.create_task(one(upload)) for upload in burst]
        await asyncio.sleep(len(burst) / rate)
    await asyncio.gather(*tasks)
