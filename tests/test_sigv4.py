"""The presigner signs exactly what botocore signs, byte for byte, for every request shape
Darkroom presigns (S3 servers that enforce signatures are exercised elsewhere)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from shared.sigv4 import Credentials, Signer

SIGNED_AT = datetime(2026, 11, 30, 12, 0, 0)
ENDPOINTS = ["http://127.0.0.1:9000", "https://s3.eu-west-1.amazonaws.com", "http://minio/s3"]
KEYS = ["originals/0123456789abcdef/" + "a" * 32, "odd key/with spaces+plus~tilde ü"]


@pytest.fixture(params=[None, "session-token/with+chars="], ids=["static", "session"])
def credentials(request: pytest.FixtureRequest) -> Credentials:
    return Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", request.param)


@pytest.fixture(params=ENDPOINTS)
async def botocore_client(
    request: pytest.FixtureRequest, credentials: Credentials
) -> AsyncIterator[Any]:
    config = AioConfig(signature_version="s3v4", s3={"addressing_style": "path"})
    async with get_session().create_client(
        "s3",
        region_name="eu-west-1",
        endpoint_url=request.param,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.token,
        config=config,
    ) as client:
        client.endpoint = request.param
        with (
            mock.patch("botocore.auth.get_current_datetime", return_value=SIGNED_AT),
            mock.patch("aiobotocore.signers.get_current_datetime", return_value=SIGNED_AT),
        ):
            yield client


def signer(client: Any) -> Signer:
    return Signer(client.endpoint, "photos-bucket", "eu-west-1")


@pytest.mark.parametrize("key", KEYS)
async def test_a_download_url_is_the_one_botocore_signs(
    botocore_client: Any, credentials: Credentials, key: str
) -> None:
    response = {
        "ResponseContentType": "image/webp",
        "ResponseCacheControl": "private, max-age=2700",
        "ResponseContentDisposition": "attachment; filename*=UTF-8''f%C3%BC.jpg",
    }
    expected = await botocore_client.generate_presigned_url(
        "get_object", Params={"Bucket": "photos-bucket", "Key": key, **response}, ExpiresIn=3600
    )
    query = {
        "response-content-type": "image/webp",
        "response-cache-control": "private, max-age=2700",
        "response-content-disposition": "attachment; filename*=UTF-8''f%C3%BC.jpg",
    }
    got = signer(botocore_client).presign_url(
        credentials,
        "GET",
        key,
        signed_at=SIGNED_AT.replace(tzinfo=UTC),
        expires_in=3600,
        query=query,
    )
    assert got == expected


@pytest.mark.parametrize("key", KEYS)
async def test_an_upload_put_is_the_one_botocore_signs(
    botocore_client: Any, credentials: Credentials, key: str
) -> None:
    expected = await botocore_client.generate_presigned_url(
        "put_object",
        Params={
            "Bucket": "photos-bucket",
            "Key": key,
            "ContentType": "image/png",
            "ContentLength": 4242,
        },
        ExpiresIn=900,
    )
    got = signer(botocore_client).presign_url(
        credentials,
        "PUT",
        key,
        signed_at=SIGNED_AT.replace(tzinfo=UTC),
        expires_in=900,
        headers={"Content-Type": "image/png", "Content-Length": "4242"},
    )
    assert got == expected


@pytest.mark.parametrize("key", KEYS)
async def test_a_multipart_part_put_is_the_one_botocore_signs(
    botocore_client: Any, credentials: Credentials, key: str
) -> None:
    upload_id = "2~Zq/Ab+c=d_e-f.g"  # ids carry characters that must be encoded
    expected = await botocore_client.generate_presigned_url(
        "upload_part",
        Params={
            "Bucket": "photos-bucket",
            "Key": key,
            "PartNumber": 7,
            "UploadId": upload_id,
            "ContentLength": 8388608,
        },
        ExpiresIn=900,
    )
    got = signer(botocore_client).presign_url(
        credentials,
        "PUT",
        key,
        signed_at=SIGNED_AT.replace(tzinfo=UTC),
        expires_in=900,
        query={"partNumber": "7", "uploadId": upload_id},
        headers={"Content-Length": "8388608"},
    )
    assert got == expected


@pytest.mark.parametrize("key", KEYS)
async def test_an_upload_post_is_the_one_botocore_signs(
    botocore_client: Any, credentials: Credentials, key: str
) -> None:
    conditions = [{"Content-Type": "image/jpeg"}, ["content-length-range", 77, 77]]
    expected = await botocore_client.generate_presigned_post(
        Bucket="photos-bucket",
        Key=key,
        Fields={"Content-Type": "image/jpeg"},
        Conditions=list(conditions),  # botocore appends its own to the list it is given
        ExpiresIn=900,
    )
    got = signer(botocore_client).presign_post(
        credentials,
        key,
        signed_at=SIGNED_AT.replace(tzinfo=UTC),
        expires_in=900,
        fields={"Content-Type": "image/jpeg"},
        conditions=conditions,
    )
    assert (got.url, list(got.fields.items())) == (
        expected["url"],
        list(expected["fields"].items()),
    )


def test_the_signing_key_is_derived_once_a_day(credentials: Credentials) -> None:
    sign = Signer("http://127.0.0.1:9000", "photos-bucket", "eu-west-1")
    with mock.patch("shared.sigv4._hmac", wraps=__import__("shared.sigv4").sigv4._hmac) as chain:
        for minute in range(3):
            sign.presign_url(
                credentials, "GET", "k", signed_at=SIGNED_AT.replace(minute=minute), expires_in=60
            )
        assert chain.call_count == 4  # date, region, service, terminator: once
        sign.presign_url(
            credentials, "GET", "k", signed_at=SIGNED_AT.replace(day=29), expires_in=60
        )
        assert chain.call_count == 8
