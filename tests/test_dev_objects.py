"""`darkroom dev` (`make run`) restarted on the same data directory still serves the
photos its database lists: the embedded storage's objects are kept on disk.

Each run is its own process, as `make run` is: moto keeps its objects per Python
process, so a restart within one (tests/harness.py `running`) would lose nothing."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiobotocore.session import get_session
from pydantic import SecretStr

from chaos.servers import die_with_parent
from services.dev import run_dev
from services.dev_objects import KeptObjects, next_delay
from services.gateway.auth import issue_token
from shared.embedded import moto_server
from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.storage import client_kwargs
from shared.store import PhotoStatus, open_store
from shared.tables import photos
from tests import images
from tests.conftest import JWT_SECRET
from tests.harness import (
    Client,
    WebhookReceiver,
    dev_settings,
    free_port,
    process_env,
    running,
)
from tests.test_processes import wait_ready

PART = 5 * 1024 * 1024


async def fetched(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with http.get(url) as resp:
        return resp.status, await resp.read(), resp.headers.get("ETag", "")


@asynccontextmanager
async def dev_process(settings: Settings) -> AsyncIterator[str]:
    """`darkroom dev` in a process of its own, stopped as Ctrl-C stops it; its URL."""
    named = {"DATA_DIR": str(settings.data_dir), "GATEWAY_PORT": str(settings.gateway_port)}
    named |= {"DEV_S3_PORT": str(settings.dev_s3_port), "HEALTH_PORT": "0", "DEV_SMTP_PORT": "0"}
    named |= {"MULTIPART_PART_SIZE": str(PART), "S3_ENDPOINT_URL": ""}
    env = process_env(settings, **{f"DARKROOM_{k}": v for k, v in named.items()})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from services.cli import main; main()",
        "dev",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    base = f"http://127.0.0.1:{settings.gateway_port}"
    try:
        await wait_ready(f"{base}/readyz", process)
        yield base
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()[-3000:]


async def until_gone(http: aiohttp.ClientSession, url: str, timeout: float = 30) -> None:
    """A deleted photo's purge has no event to await from outside the worker: poll. (moto
    answers a missing key 403, as S3 does a caller who may not list the bucket.)"""
    async with asyncio.timeout(timeout):
        while (await fetched(http, url))[0] == 200:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_photos_are_still_served_after_the_dev_server_restarts(
    tmp_path: Path, hooks: WebhookReceiver, unique: str
) -> None:
    # A fixed storage port, as `make run` has: links signed before the restart still point
    # at the storage that comes back.
    settings = dev_settings(
        tmp_path, hooks, unique, JWT_SECRET, multipart_part_size=PART, dev_s3_port=free_port()
    )
    jpeg, png = images.jpeg(1600, 1000), images.noise_png(1400, 1300)
    gone = images.jpeg(800, 600)
    async with dev_process(settings) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "newcomer"))
        whole = await client.grant(jpeg, "image/jpeg")
        await client.upload(whole, jpeg, "image/jpeg")
        parts = await client.grant(png, "image/png", multipart=True)
        await client.upload_in_parts(parts, png)
        deleted = await client.grant(gone, "image/jpeg")
        await client.upload(deleted, gone, "image/jpeg")
        for grant in (whole, parts, deleted):
            await hooks.wait_for(grant["photo_id"], "photo.ready")
        before = {g["photo_id"]: await client.photo(g["photo_id"]) for g in (whole, parts)}
        thumbs = {
            p: (await fetched(http, v["renditions"]["thumb"]["url"]))[1:] for p, v in before.items()
        }
        etags = {p: (await fetched(http, v["original"]["url"]))[2] for p, v in before.items()}
        deleted_url = (await client.photo(deleted["photo_id"]))["original"]["url"]
        async with http.delete(
            f"{base}/v1/photos/{deleted['photo_id']}", headers=client.headers
        ) as resp:
            assert resp.status == 204
        await until_gone(http, deleted_url)

    async with dev_process(settings) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "newcomer"))
        for photo_id, sent in ((whole["photo_id"], jpeg), (parts["photo_id"], png)):
            view = await client.photo(photo_id)
            assert view["status"] == "ready"
            status, original, etag = await fetched(http, view["original"]["url"])
            # The same ETag: a multipart original is put back in its parts (the ETag
            # is recorded with the photo, and conditional requests carry it).
            assert (status, original, etag) == (200, sent, etags[photo_id])
            status, thumb, _ = await fetched(http, view["renditions"]["thumb"]["url"])
            assert (status, thumb) == (200, thumbs[photo_id][0])
        assert (await fetched(http, deleted_url))[0] == 403


@asynccontextmanager
async def embedded_s3(tmp_path: Path, unique: str) -> AsyncIterator[tuple[Settings, Any]]:
    """moto in this process, the settings that reach it, and a client."""
    with moto_server() as url:
        settings = Settings(
            data_dir=tmp_path,
            s3_endpoint_url=url,
            s3_bucket=f"kept-{unique}",
            s3_access_key_id="darkroom",
            s3_secret_access_key=SecretStr("darkroom-secret"),
        )
        kwargs = client_kwargs(settings, url)
        async with get_session().create_client("s3", **kwargs) as s3:
            await s3.create_bucket(Bucket=settings.s3_bucket)
            yield settings, s3


async def test_a_kept_object_whose_file_is_gone_is_skipped_and_the_rest_restored(
    tmp_path: Path, unique: str
) -> None:
    async with embedded_s3(tmp_path, unique) as (settings, s3):
        kept = KeptObjects(settings)
        await kept.restore()
        for key in ("a.jpg", "b.jpg"):
            await s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=key.encode())
        async with kept.keeping():
            pass
        for key in ("a.jpg", "b.jpg"):  # as a new process's moto: empty
            await s3.delete_object(Bucket=settings.s3_bucket, Key=key)
        (tmp_path / "objects" / settings.s3_bucket / hashlib.sha256(b"a.jpg").hexdigest()).unlink()

        assert await KeptObjects(settings).restore() == 1
        got = await s3.get_object(Bucket=settings.s3_bucket, Key="b.jpg")
        async with got["Body"] as body:
            assert await body.read() == b"b.jpg"
        listed = await s3.list_objects_v2(Bucket=settings.s3_bucket)
        assert [o["Key"] for o in listed["Contents"]] == ["b.jpg"]


async def test_a_damaged_index_stops_the_dev_server_naming_what_to_move(
    tmp_path: Path, unique: str
) -> None:
    async with embedded_s3(tmp_path, unique) as (settings, _):
        index = tmp_path / "objects" / settings.s3_bucket / "index.json"
        index.parent.mkdir(parents=True)
        index.write_text('{"a.jpg": {"etag": 1}}')
        with pytest.raises(ConfigurationError, match="is not an index of kept objects") as err:
            await KeptObjects(settings).restore()
    assert f"move {index.parent} away" in str(err.value)


async def test_kept_objects_without_their_index_stop_the_dev_server_not_vanish(
    tmp_path: Path, unique: str
) -> None:
    async with embedded_s3(tmp_path, unique) as (settings, s3):
        await s3.put_object(Bucket=settings.s3_bucket, Key="a.jpg", Body=b"a")
        async with KeptObjects(settings).keeping():
            pass
        kept = tmp_path / "objects" / settings.s3_bucket
        (kept / "index.json").unlink()
        with pytest.raises(ConfigurationError, match=r"holds objects but no index\.json"):
            await KeptObjects(settings).restore()
    assert [p.name for p in kept.iterdir()] == [hashlib.sha256(b"a.jpg").hexdigest()]


async def test_a_photo_a_stopped_dev_server_left_verified_is_rendered_after_the_restart(
    tmp_path: Path, hooks: WebhookReceiver, unique: str
) -> None:
    """Stopped mid-pipeline, the in-process broker lost the photo's photo.verified: the
    next start sends it again."""
    settings = dev_settings(tmp_path, hooks, unique, JWT_SECRET)
    photo = images.jpeg(800, 600)
    async with running(settings, [run_dev]) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "newcomer"))
        grant = await client.grant(photo, "image/jpeg")
        await client.upload(grant, photo, "image/jpeg")
        await hooks.wait_for(grant["photo_id"], "photo.ready")
    async with open_store(settings) as store, store.db.transaction() as conn:
        # As the stop left it: verified, its message to the renderer gone with the process.
        back = {"status": PhotoStatus.VERIFIED.value, "renditions": None}
        await conn.execute(sa.update(photos).where(photos.c.id == grant["photo_id"]).values(back))

    async with running(settings, [run_dev]) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "newcomer"))
        async with asyncio.timeout(30):
            # The webhook went out the first time: the photo's view is what shows it.
            while (view := await client.photo(grant["photo_id"]))["status"] != "ready":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    assert set(view["renditions"]) == {"thumb", "preview"}


def test_a_quiet_bucket_is_looked_at_less_often_and_a_round_takes_a_tenth_at_most() -> None:
    assert next_delay(2.0, changed=False, took=0.01) == 4.0
    assert next_delay(16.0, changed=False, took=0.01) == 30.0
    assert next_delay(30.0, changed=True, took=0.01) == 2.0  # back at once on a change
    assert next_delay(2.0, changed=True, took=0.5) == 5.0  # 3,000 keys: 0.5 s a round
