"""`darkroom dev` keeps the embedded S3's objects on disk, beside its SQLite database.

moto holds objects in memory only: without this, a restarted `make run` listed photos
whose files were gone. The bucket is copied to DARKROOM_DATA_DIR/objects/<bucket>/ every
few seconds while it changes (up to every 30 s while it does not) and once more on a
clean stop, and put back before the bucket announces anything, so restored photos are
not taken for new uploads. A hard kill loses the objects of the last round's interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.errors import ConfigurationError
from shared.logging import get_logger
from shared.settings import Settings
from shared.storage import client_kwargs

log = get_logger(__name__)

SYNC_EVERY_S = 2.0  # while objects change
SYNC_QUIET_S = 30.0  # at most, while they do not


class Kept(BaseModel):
    """One object as kept on disk (its bytes are in the file named by its key's hash)."""

    etag: str
    content_type: str
    metadata: dict[str, str]
    # A multipart object's ETag (recorded with its photo) depends on its parts: it is
    # put back in parts of this size, so the ETag stays the same.
    part_size: int | None = None


_INDEX = TypeAdapter(dict[str, Kept])


class KeptObjects:
    """The bucket's objects on disk: `restore` puts them back, `keeping` keeps them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._bucket = settings.s3_bucket
        self._dir = Path(settings.data_dir) / "objects" / settings.s3_bucket
        self._index_path = self._dir / "index.json"
        self._index: dict[str, Kept] = {}

    def _client(self) -> Any:
        return get_session().create_client(
            "s3", **client_kwargs(self._settings, self._settings.s3_endpoint_url)
        )

    def _file(self, key: str) -> Path:
        return self._dir / hashlib.sha256(key.encode()).hexdigest()

    async def restore(self) -> int:
        """Put back every object kept into the (new, empty) bucket; how many."""
        self._index = self._read_index()
        async with self._client() as s3:
            for key, kept in list(self._index.items()):
                try:
                    data = await asyncio.to_thread(self._file(key).read_bytes)
                except FileNotFoundError:
                    log.warning("kept object missing on disk; not restored", key=key)
                    del self._index[key]
                    continue
                etag = await self._put(s3, key, kept, data)
                if etag != kept.etag:  # parts of uneven sizes: its photo's ETag is stale
                    log.warning("object restored with another ETag", key=key, was=kept.etag)
                kept.etag = etag
        self._drop_unlisted_files()
        self._write_index()
        if self._index:
            log.info("objects restored", count=len(self._index), directory=str(self._dir))
        return len(self._index)

    def _read_index(self) -> dict[str, Kept]:
        if not self._index_path.exists():
            if self._dir.is_dir() and any(self._dir.iterdir()):
                raise ConfigurationError(
                    f"{self._dir} holds objects but no index.json naming them;"
                    f" move it away to start without them"
                )
            return {}
        try:
            return _INDEX.validate_json(self._index_path.read_bytes())
        except ValidationError as exc:
            raise ConfigurationError(
                f"{self._index_path} is not an index of kept objects ({exc.errors()[0]['msg']});"
                f" move {self._dir} away to start without them"
            ) from exc

    @asynccontextmanager
    async def keeping(self) -> AsyncIterator[None]:
        """Copy new and changed objects to disk, and forget deleted ones, every
        SYNC_EVERY_S while they change (less often while they do not), and once more at
        the end."""
        async with self._client() as s3:
            task = asyncio.create_task(self._sync_forever(s3), name="dev-objects")
            try:
                yield
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await self.sync(s3)

    async def _sync_forever(self, s3: Any) -> None:
        loop, delay = asyncio.get_running_loop(), SYNC_EVERY_S
        while True:
            await asyncio.sleep(delay)
            started, changed = loop.time(), True
            try:
                changed = await self.sync(s3)
            except Exception as exc:
                # Kept as of the last round; the next one (and the last, at the stop)
                # tries again.
                log.warning("objects not kept on disk this round", error=repr(exc))
            delay = next_delay(delay, changed=changed, took=loop.time() - started)

    async def sync(self, s3: Any) -> bool:
        """One round; whether anything on disk changed."""
        listed = await _listing(s3, self._bucket)
        changed = False
        for key, etag in listed.items():
            if key not in self._index or self._index[key].etag != etag:
                changed |= await self._save(s3, key)
        for key in self._index.keys() - listed.keys():
            del self._index[key]
            changed = True
        if changed:
            self._write_index()  # before the files go: the index never names a missing one
            self._drop_unlisted_files()
        return changed

    async def _save(self, s3: Any, key: str) -> bool:
        try:
            got = await s3.get_object(Bucket=self._bucket, Key=key)
            async with got["Body"] as body:
                data = await body.read()
            part_size = None
            if "-" in got["ETag"]:
                first = await s3.head_object(Bucket=self._bucket, Key=key, PartNumber=1)
                part_size = first["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False  # deleted since the listing
            raise
        await asyncio.to_thread(_write_atomically, self._file(key), data)
        self._index[key] = Kept(
            etag=got["ETag"],
            content_type=got.get("ContentType", "binary/octet-stream"),
            metadata=got.get("Metadata", {}),
            part_size=part_size,
        )
        return True

    async def _put(self, s3: Any, key: str, kept: Kept, data: bytes) -> str:
        common: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        common.update(ContentType=kept.content_type, Metadata=kept.metadata)
        if kept.part_size is None:
            return str((await s3.put_object(Body=data, **common))["ETag"])
        upload = (await s3.create_multipart_upload(**common))["UploadId"]
        parts = []
        for number, start in enumerate(range(0, len(data), kept.part_size), start=1):
            chunk = data[start : start + kept.part_size]
            sent = await s3.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload, PartNumber=number, Body=chunk
            )
            parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        done = await s3.complete_multipart_upload(
            Bucket=self._bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )
        return str(done["ETag"])

    def _write_index(self) -> None:
        _write_atomically(self._index_path, _INDEX.dump_json(self._index))

    def _drop_unlisted_files(self) -> None:
        named = {self._file(key).name for key in self._index} | {self._index_path.name}
        for path in self._dir.glob("*"):
            if path.name not in named:
                path.unlink(missing_ok=True)


def next_delay(delay: float, *, changed: bool, took: float) -> float:
    """Seconds to the next round. Listing costs moto 0.17 ms of CPU a key (0.51 s for
    3,000, measured): a quiet bucket is looked at less and less often, and rounds take at
    most a tenth of the time."""
    quiet = min(delay * 2, SYNC_QUIET_S)
    return max(SYNC_EVERY_S if changed else quiet, took * 10)


async def _listing(s3: Any, bucket: str) -> dict[str, str]:
    """Every object's key and ETag."""
    found: dict[str, str] = {}
    async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found.update((o["Key"], o["ETag"]) for o in page.get("Contents", ()))
    return found


def _write_atomically(path: Path, data: bytes) -> None:
    """A crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
