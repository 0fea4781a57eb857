"""Object storage on aiobotocore. One client per process, opened by `open_storage`; the
per-photo reads and writes go over aiohttp instead (`shared.s3_objects`).

Every request is signed SigV4 (botocore falls back to SigV2 for us-east-1 otherwise).
Presigned URLs are signed by `shared.sigv4` rather than botocore (about 30 us instead of
0.4-0.6 ms each), for `DARKROOM_S3_PUBLIC_ENDPOINT_URL` when clients reach storage under
another name than the services do (compose, Kubernetes ingress).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioCredentials
from aiobotocore.session import AioSession, get_session
from aiohttp.helpers import get_env_proxy_for_url
from botocore.exceptions import BotoCoreError, ClientError
from yarl import URL

from shared.errors import ConfigurationError, StorageUnavailable
from shared.multipart import MultipartUploads
from shared.s3_objects import Body as Body  # re-exported: the workers name it from here
from shared.s3_objects import ObjectChanged as ObjectChanged
from shared.s3_objects import ObjectInfo as ObjectInfo
from shared.s3_objects import ObjectRequests
from shared.settings import Settings
from shared.sigv4 import Credentials, PresignedPost, Signer
from shared.tracing import traced_client

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class Presigner:
    """Signs URLs for one endpoint and bucket with the process's S3 credentials: the
    configured keys, or botocore's chain (environment, instance or pod role), whose
    temporary credentials are refreshed as they near expiry."""

    def __init__(self, signer: Signer, credentials: Any) -> None:
        self.signer = signer
        self._credentials = credentials

    async def credentials(self) -> Credentials:
        frozen = await self._credentials.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


async def open_presigner(settings: Settings, session: AioSession, endpoint_url: str) -> Presigner:
    key = settings.s3_access_key_id
    secret = settings.s3_secret_access_key.get_secret_value()
    credentials = AioCredentials(key, secret) if key else await session.get_credentials()
    if credentials is None:
        raise ConfigurationError(
            "no S3 credentials: set DARKROOM_S3_ACCESS_KEY_ID and DARKROOM_S3_SECRET_ACCESS_KEY,"
            " or give the process a role botocore can find"
        )
    return Presigner(Signer(endpoint_url, settings.s3_bucket, settings.s3_region), credentials)


class Storage:
    def __init__(
        self, client: Any, presigner: Presigner, bucket: str, objects: ObjectRequests
    ) -> None:
        self._client = client
        self.presigner = presigner
        self.bucket = bucket
        self.objects = objects
        self.multipart = MultipartUploads(client, presigner, bucket)

    async def presign_post(
        self, key: str, *, content_type: str, size: int, expires_in: int
    ) -> PresignedPost:
        """A POST whose policy pins the key, the Content-Type and the exact size."""
        return self.presigner.signer.presign_post(
            await self.presigner.credentials(),
            key,
            signed_at=datetime.now(UTC),
            expires_in=expires_in,
            fields={"Content-Type": content_type},
            conditions=[{"Content-Type": content_type}, ["content-length-range", size, size]],
        )

    async def presign_put(
        self, key: str, *, content_type: str, size: int, expires_in: int
    ) -> tuple[str, dict[str, str]]:
        """A PUT with Content-Type and Content-Length signed; returns (url, headers to send)."""
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        url = self.presigner.signer.presign_url(
            await self.presigner.credentials(),
            "PUT",
            key,
            signed_at=datetime.now(UTC),
            expires_in=expires_in,
            headers=headers,
        )
        return url, headers

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size and type, or None if it does not exist (yet)."""
        return await self.objects.head(key)

    async def head_and_tail(self, key: str, n: int) -> tuple[ObjectInfo, bytes | None] | None:
        """`head`, and the last n bytes (None if they could not come with it), from one
        request: see ObjectRequests.head_and_tail."""
        return await self.objects.head_and_tail(key, n)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes start..end inclusive (fewer if the object is shorter)."""
        body = await self.objects.open_range(key, start, end)
        try:
            return await body.read(end - start + 1)
        finally:
            body.close()

    async def get(self, key: str, *, if_match: str | None = None) -> bytes:
        """The whole object; with `if_match`, only if its ETag is still that one."""
        return await self.objects.read(key, if_match=if_match)

    async def open_range(self, key: str, start: int, end: int) -> Body:
        """Bytes start..end inclusive (fewer if the object is shorter), read as they are
        wanted; close it when done (closed early, its connection is dropped)."""
        return await self.objects.open_range(key, start, end)

    async def stream(self, key: str, *, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        """The object's bytes in chunks, never all in memory."""
        try:
            resp = await self._client.get_object(Bucket=self.bucket, Key=key)
            async with resp["Body"] as body:
                while chunk := await body.read(chunk_size):
                    yield chunk
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("get", key, exc) from exc

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("list", prefix, exc) from exc

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under prefix; returns how many. Absent objects are fine."""
        keys = [key async for key in self.list_keys(prefix)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            try:
                resp = await self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (ClientError, BotoCoreError) as exc:
                raise _unavailable("delete", prefix, exc) from exc
            if resp.get("Errors"):
                raise StorageUnavailable(f"could not delete under {prefix!r}: {resp['Errors'][:3]}")
        return len(keys)

    async def put(self, key: str, body: bytes, *, content_type: str) -> None:
        await self.objects.put(key, body, content_type=content_type)

    async def delete(self, key: str) -> None:
        """Delete; an object that is already gone is not an error (S3 says 204 either way)."""
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("delete", key, exc) from exc

    async def ping(self) -> bool:
        """Whether storage answers at all. A 4xx (no s3:ListBucket, say) is an answer: it
        says nothing is down, and must not make a worker wait for a recovery that will not
        come."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
            return int(status) < 500
        except BotoCoreError:
            return False
        return True

    async def ensure_bucket(self) -> None:
        """Create the bucket if missing (dev and tests; production buckets are provisioned)."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) not in _NOT_FOUND:
                raise _unavailable("head_bucket", self.bucket, exc) from exc
            await self._client.create_bucket(Bucket=self.bucket)


def sqs_client_kwargs(settings: Settings, endpoint_url: str | None) -> dict[str, Any]:
    """For an SQS client: S3's credentials, without S3's addressing config."""
    kwargs = client_kwargs(settings, endpoint_url)
    kwargs.pop("config")
    return kwargs


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(op: str, key: str, exc: Exception) -> StorageUnavailable:
    return StorageUnavailable(f"storage {op} {key!r} failed: {exc}")


def client_kwargs(settings: Settings, endpoint_url: str | None) -> dict[str, Any]:
    return {
        "region_name": settings.s3_region,
        "endpoint_url": endpoint_url or None,
        "aws_access_key_id": settings.s3_access_key_id or None,
        "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value() or None,
        "config": AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=min(settings.s3_timeout, 10.0),
            read_timeout=settings.s3_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    }


def _object_session(settings: Settings) -> aiohttp.ClientSession:
    """An HTTP session that reaches storage as botocore does: its timeouts, and
    AWS_CA_BUNDLE for a private CA (the proxy variables: `_proxy_for`)."""
    bundle = os.environ.get("AWS_CA_BUNDLE")
    tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=bundle) if bundle else True
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=tls),
        timeout=aiohttp.ClientTimeout(
            sock_connect=min(settings.s3_timeout, 10.0), sock_read=settings.s3_timeout
        ),
        auto_decompress=False,
        skip_auto_headers={"Content-Type"},
    )


def _proxy_for(endpoint_url: str) -> str | None:
    """HTTP(S)_PROXY for the endpoint, unless NO_PROXY exempts it, looked up once: with
    aiohttp's trust_env it was looked up, with ~/.netrc, in a thread for every request."""
    try:
        proxy, _ = get_env_proxy_for_url(URL(endpoint_url))
    except LookupError:
        return None
    return str(proxy)


@asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    session = get_session()
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            session.create_client("s3", **client_kwargs(settings, settings.s3_endpoint_url))
        )
        endpoint = settings.s3_public_endpoint_url or client.meta.endpoint_url
        presigner = await open_presigner(settings, session, endpoint)
        http = await stack.enter_async_context(_object_session(settings))
        # The per-photo requests, signed for the services' own endpoint.
        own = Signer(client.meta.endpoint_url, settings.s3_bucket, settings.s3_region)
        objects = ObjectRequests(
            http,
            own,
            presigner.credentials,
            settings.s3_bucket,
            proxy=_proxy_for(client.meta.endpoint_url),
        )
        yield Storage(traced_client(client, "S3"), presigner, settings.s3_bucket, objects)
