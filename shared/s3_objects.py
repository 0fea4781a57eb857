"""The workers' per-photo object requests (GET, ranged GET, HEAD, PUT) over aiohttp, each
signed as a presigned URL by `shared.sigv4` for the services' own endpoint.

Through aiobotocore each cost 2.8-3.5 ms of the caller's CPU (7 ms for a 2.9 MB GET), of
which the transfer itself is a third: the rest is botocore building, signing, emitting
events and parsing (measured against SeaweedFS, 100 requests each: 3.1 ms per GET and
1.1 ms per PUT done this way). Per photo the thumbnail worker makes three and the ingest
worker three. Everything else (deletes, listings, multipart, buckets) stays on
aiobotocore, off the per-photo path.

Failures map as aiobotocore's did in `shared.storage`: an answer of 5xx or none at all
is retried twice, then raised as StorageUnavailable; 412 on a conditional GET (or 404)
is ObjectChanged; HEAD's 404 is "absent".
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from opentelemetry.trace import SpanKind

from shared.errors import PermanentError, StorageUnavailable
from shared.sigv4 import Credentials, Signer
from shared.tracing import tracer

ATTEMPTS = 3
# A URL only has to outlive its own request (and the clock skew S3 allows).
URL_TTL_S = 900


class ObjectChanged(PermanentError):
    """The object is no longer the one asked for: replaced, or removed."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None
    etag: str | None


class Body:
    """An object's bytes as they arrive (`ObjectRequests.open_range`)."""

    def __init__(self, key: str, resp: aiohttp.ClientResponse) -> None:
        self._key = key
        self._resp = resp

    async def read(self, n: int) -> bytes:
        """The next n bytes; fewer only at the end."""
        parts: list[bytes] = []
        want = n
        try:
            while want > 0 and (part := await self._resp.content.read(want)):
                parts.append(part)
                want -= len(part)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StorageUnavailable(f"storage get {self._key!r} failed: {exc}") from exc
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Done: a body not read to its end takes its connection with it."""
        self._resp.close()


class Refused(Exception):
    """Storage answered, but not with what was asked (a 4xx)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class ObjectRequests:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        signer: Signer,
        credentials: Callable[[], Awaitable[Credentials]],
        bucket: str,
        *,
        proxy: str | None = None,
    ) -> None:
        self._http = http
        self._proxy = proxy
        self._signer = signer
        self._credentials = credentials
        self._bucket = bucket

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = await self.open("HEAD", key, operation="head_object")
        except Refused as exc:
            if exc.status == 404:
                return None
            raise StorageUnavailable(f"storage head {key!r} failed: {exc}") from exc
        resp.release()
        length = resp.headers.get("Content-Length", "")
        if not length.isdigit():  # never a size to judge an upload by
            raise StorageUnavailable(f"storage head {key!r}: no Content-Length in the answer")
        return ObjectInfo(
            size=int(length),
            content_type=resp.headers.get("Content-Type"),
            etag=resp.headers.get("ETag"),
        )

    async def head_and_tail(self, key: str, n: int) -> tuple[ObjectInfo, bytes | None] | None:
        """What `head` answers and the object's last n bytes (all of it if shorter), from
        one suffix-ranged GET; None if the object does not exist. From an answer that
        does not give the object's size (an empty object's, a server's that ignored the
        range) only the HEAD's part is taken, by a HEAD: the tail is then None."""
        try:
            resp = await self.open(
                "GET", key, operation="get_object", headers={"Range": f"bytes=-{n}"}
            )
        except Refused as exc:
            if exc.status == 404:
                return None
            if exc.status == 416:  # some servers' answer for an empty object
                return await self._head_only(key)
            raise StorageUnavailable(f"storage get {key!r} failed: {exc}") from exc
        size = _total(resp.headers.get("Content-Range", "")) if resp.status == 206 else None
        if size is None:
            resp.close()
            return await self._head_only(key)
        body = Body(key, resp)
        try:
            tail = await body.read(n)
        finally:
            body.close()
        return ObjectInfo(size, resp.headers.get("Content-Type"), resp.headers.get("ETag")), tail

    async def _head_only(self, key: str) -> tuple[ObjectInfo, None] | None:
        info = await self.head(key)
        return None if info is None else (info, None)

    async def read(self, key: str, *, if_match: str | None = None) -> bytes:
        """The whole object; with `if_match`, only if its ETag is still that one."""
        resp = await self._get(key, {"If-Match": if_match} if if_match else {})
        try:
            return await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StorageUnavailable(f"storage get {key!r} failed: {exc}") from exc
        finally:
            resp.release()

    async def open_range(self, key: str, start: int, end: int) -> Body:
        """Bytes start..end inclusive (fewer if the object is shorter), as they arrive."""
        resp = await self._get(key, {"Range": f"bytes={start}-{end}"})
        if start > 0 and resp.status != 206:
            resp.close()
            raise StorageUnavailable(f"storage get {key!r}: the range {start}- was not honoured")
        return Body(key, resp)

    async def put(self, key: str, body: bytes, *, content_type: str) -> None:
        try:
            resp = await self.open(
                "PUT", key, operation="put_object", signed={"Content-Type": content_type}, body=body
            )
        except Refused as exc:
            raise StorageUnavailable(f"storage put {key!r} failed: {exc}") from exc
        resp.release()

    async def _get(self, key: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        try:
            return await self.open("GET", key, operation="get_object", headers=headers)
        except Refused as exc:
            if exc.status == 412:
                raise ObjectChanged(f"{key!r} was replaced since it was verified") from exc
            if exc.status == 404 and "If-Match" in headers:
                raise ObjectChanged(f"{key!r} was removed since it was verified") from exc
            raise StorageUnavailable(f"storage get {key!r} failed: {exc}") from exc

    async def open(
        self,
        method: str,
        key: str,
        *,
        operation: str,
        headers: Mapping[str, str] | None = None,
        signed: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> aiohttp.ClientResponse:
        """The response to a signed request (`signed` headers are part of the signature,
        `headers` are not), its body unread: the caller releases it. Raises
        StorageUnavailable, or Refused for a 4xx."""
        attributes = {
            "rpc.system": "aws-api",
            "rpc.service": "S3",
            "rpc.method": operation,
            "aws.s3.bucket": self._bucket,
        }
        with tracer.start_as_current_span(
            f"S3.{operation}", kind=SpanKind.CLIENT, attributes=attributes
        ):
            resp = await self._answer(method, key, dict(headers or {}), signed or {}, body)
        if resp.status >= 400:
            try:
                detail = (await resp.text(errors="replace"))[:300]
            finally:
                resp.release()
            raise Refused(resp.status, detail)
        return resp

    async def _answer(
        self,
        method: str,
        key: str,
        headers: dict[str, str],
        signed: Mapping[str, str],
        body: bytes | None,
    ) -> aiohttp.ClientResponse:
        if body is not None:
            # S3 checks the bytes it stored against this (botocore sent a checksum too).
            digest = hashlib.md5(body, usedforsecurity=False).digest()
            headers["Content-MD5"] = base64.b64encode(digest).decode()
        for attempt in range(1, ATTEMPTS + 1):
            url = self._signer.presign_url(
                await self._credentials(),
                method,
                key,
                signed_at=datetime.now(UTC),
                expires_in=URL_TTL_S,
                headers=signed,
            )
            try:
                resp = await self._http.request(
                    method, url, headers={**headers, **signed}, data=body, proxy=self._proxy
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == ATTEMPTS:
                    raise StorageUnavailable(f"storage {method} {key!r} failed: {exc}") from exc
            else:
                if resp.status < 500:
                    return resp
                detail = f"HTTP {resp.status}"
                resp.release()
                if attempt == ATTEMPTS:
                    raise StorageUnavailable(f"storage {method} {key!r} failed: {detail}")
            await asyncio.sleep(random.uniform(0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")


def _total(content_range: str) -> int | None:
    """The object's size from a 206's `Content-Range: bytes 0-99/1234`, None if absent."""
    _, _, total = content_range.rpartition("/")
    return int(total) if content_range.startswith("bytes ") and total.isdigit() else None
