"""Storage notifications as MinIO, Ceph RGW and AWS S3 send them: the same S3 event record
with each server's quirks (how the key is encoded, a size that may be a string or absent,
AWS's s3:TestEvent)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, quote_plus


def minio(
    bucket: str, key: str, size: int | None, *, event: str = "s3:ObjectCreated:Post"
) -> bytes:
    obj: dict[str, Any] = {
        "key": quote(key, safe=""),
        "contentType": "image/jpeg",
        "userMetadata": {"content-type": "image/jpeg"},
        "versionId": "",
        "sequencer": "17A2B3C4D5E6F708",
    }
    if size:  # MinIO omits size and eTag for zero-byte objects
        obj.update(size=size, eTag="d41d8cd98f00b204e9800998ecf8427e")
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2026-11-22T00:00:00.000Z",
        "eventName": event,
        "userIdentity": {"principalId": "minio"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "1"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "minio"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO"},
    }
    return json.dumps({"EventName": event, "Key": f"{bucket}/{key}", "Records": [record]}).encode()


def ceph(bucket: str, key: str, size: int | None, *, event: str = "ObjectCreated:Put") -> bytes:
    record = {
        "eventVersion": "2.2",
        "eventSource": "ceph:s3",
        "awsRegion": "default",
        "eventTime": "2026-11-22T00:00:00.000Z",
        "eventName": event,
        "userIdentity": {"principalId": "tester"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "darkroom",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "tester"},
                "arn": f"arn:aws:s3:::{bucket}",
                "id": "b1",
            },
            "object": {
                "key": key,
                "size": "" if size is None else str(size),
                "eTag": "abc",
                "versionId": "",
                "sequencer": "0A1B",
                "metadata": [{"key": "x-amz-meta-origin", "val": "test"}],
                "tags": [],
            },
        },
        "eventId": "1700000000.123.abc",
        "opaqueData": "",
    }
    return json.dumps({"Records": [record]}).encode()


def aws(bucket: str, key: str, size: int, *, event: str = "ObjectCreated:Put") -> bytes:
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-22T00:00:00.000Z",
        "eventName": event,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "darkroom",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": quote_plus(key, safe="/"),
                "size": size,
                "eTag": "abc",
                "sequencer": "0055AED6DCD90281E5",
            },
        },
    }
    return json.dumps({"Records": [record]}).encode()


def aws_test_event(bucket: str) -> bytes:
    return json.dumps(
        {
            "Service": "Amazon S3",
            "Event": "s3:TestEvent",
            "Time": "2026-11-22T00:00:00.000Z",
            "Bucket": bucket,
            "RequestId": "5582815E1AEA5ADF",
            "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
        }
    ).encode()
