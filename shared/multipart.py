"""S3 multipart uploads: begun, listed, completed and aborted by the services, each part
sent by the client straight to storage through a presigned UploadPart URL.

A part URL signs its exact Content-Length, as a single upload's URL signs the whole
size, so storage that checks signatures refuses a part of any other size. Only the
services hold the credentials that complete an upload: no object appears under the key
but through the gateway, and an aborted upload can never become one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import PermanentError, StorageUnavailable

if TYPE_CHECKING:  # shared.storage builds these; imported for types only
    from shared.storage import Presigner

_GONE = {"NoSuchUpload", "404", "NotFound"}
_REFUSED = {"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML"}


class UploadGone(PermanentError):
    """The multipart upload is no longer open: completed, aborted, or never was."""


class PartsRefused(PermanentError):
    """Storage would not assemble the object from the parts named (S3's code says why)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class StoredPart:
    number: int
    etag: str
    size: int


@dataclass(frozen=True)
class OpenUpload:
    key: str
    upload_id: str


class MultipartUploads:
    def __init__(self, client: Any, presigner: Presigner, bucket: str) -> None:
        self._client = client
        self._presigner = presigner
        self.bucket = bucket

    async def begin(self, key: str, *, content_type: str) -> str:
        """CreateMultipartUpload: the upload's id."""
        resp = await self._call("create", key, ContentType=content_type)
        return str(resp["UploadId"])

    async def presign_part(
        self, key: str, upload_id: str, number: int, *, size: int, expires_in: int
    ) -> tuple[str, dict[str, str]]:
        """An UploadPart PUT with its exact size signed; returns (url, headers to send)."""
        headers = {"Content-Length": str(size)}
        url = self._presigner.signer.presign_url(
            await self._presigner.credentials(),
            "PUT",
            key,
            signed_at=datetime.now(UTC),
            expires_in=expires_in,
            query={"partNumber": str(number), "uploadId": upload_id},
            headers=headers,
        )
        return url, headers

    async def parts(self, key: str, upload_id: str) -> list[StoredPart]:
        """Every part storage holds for the upload, by number."""
        found: list[StoredPart] = []
        marker = 0
        while True:
            resp = await self._call("list", key, UploadId=upload_id, PartNumberMarker=marker)
            found += [
                StoredPart(int(p["PartNumber"]), str(p["ETag"]), int(p["Size"]))
                for p in resp.get("Parts", [])
            ]
            if not resp.get("IsTruncated"):
                return found
            marker = int(resp["NextPartNumberMarker"])

    async def complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        """CompleteMultipartUpload from (number, etag) pairs in order."""
        listed = [{"PartNumber": n, "ETag": etag} for n, etag in parts]
        await self._call("complete", key, UploadId=upload_id, MultipartUpload={"Parts": listed})

    async def abort(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload; an upload already gone is not an error."""
        with contextlib.suppress(UploadGone):
            await self._call("abort", key, UploadId=upload_id)

    async def open_uploads(self, prefix: str) -> AsyncIterator[OpenUpload]:
        """Every multipart upload begun under `prefix` and neither completed nor aborted."""
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    yield OpenUpload(upload["Key"], upload["UploadId"])
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"storage multipart listing {prefix!r} failed: {exc}") from exc

    async def _call(self, op: str, key: str, **params: Any) -> Any:
        method = {
            "create": self._client.create_multipart_upload,
            "list": self._client.list_parts,
            "complete": self._client.complete_multipart_upload,
            "abort": self._client.abort_multipart_upload,
        }[op]
        try:
            return await method(Bucket=self.bucket, Key=key, **params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _GONE:
                raise UploadGone(f"no open multipart upload for {key!r}") from exc
            if code in _REFUSED:
                raise PartsRefused(code, str(error.get("Message", ""))) from exc
            raise StorageUnavailable(f"storage multipart {op} {key!r} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"storage multipart {op} {key!r} failed: {exc}") from exc
