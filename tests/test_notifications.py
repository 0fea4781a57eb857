from __future__ import annotations

import pytest

from services.ingest_worker.notifications import parse_notification
from shared.errors import InvalidMessage
from tests import s3events

AWKWARD_KEYS = [
    "originals/abc/plain",
    "photos/with space.jpg",
    "a+b/c+d.jpg",
    "unicodé/фото 1.jpg",
    "deep/nested/slashes/x.jpg",
]


@pytest.mark.parametrize("key", AWKWARD_KEYS)
@pytest.mark.parametrize("fmt", ["minio", "ceph", "aws"])
def test_every_format_yields_the_exact_key(fmt: str, key: str) -> None:
    body = getattr(s3events, fmt)("bkt", key, 1234)
    [obj] = parse_notification(body)
    assert (obj.bucket, obj.key, obj.size) == ("bkt", key, 1234)
    assert obj.event.startswith("ObjectCreated:")


@pytest.mark.parametrize(
    ("fmt", "event"),
    [
        ("minio", "s3:ObjectCreated:CompleteMultipartUpload"),
        ("ceph", "ObjectCreated:CompleteMultipartUpload"),
        ("aws", "ObjectCreated:CompleteMultipartUpload"),
    ],
)
def test_a_completed_multipart_upload_is_an_object_created_like_a_put(fmt: str, event: str) -> None:
    body = getattr(s3events, fmt)("bkt", "originals/a/b", 9_000_000, event=event)
    [obj] = parse_notification(body)
    assert (obj.key, obj.event) == ("originals/a/b", "ObjectCreated:CompleteMultipartUpload")


def test_ceph_string_size_and_missing_size() -> None:
    [obj] = parse_notification(s3events.ceph("b", "k", None))
    assert obj.size is None
    [obj] = parse_notification(s3events.ceph("b", "k", 77))
    assert obj.size == 77


def test_minio_zero_byte_object_has_no_size() -> None:
    [obj] = parse_notification(s3events.minio("b", "k", 0))
    assert obj.size is None


def test_aws_test_event_is_dropped() -> None:
    assert parse_notification(s3events.aws_test_event("b")) == []


def test_events_other_than_object_created_are_ignored() -> None:
    assert parse_notification(s3events.aws("b", "k", 1, event="ObjectRemoved:Delete")) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"Records": 5}', "no Records list"),
        (b'{"Records": [{"eventName": "ObjectCreated:Put"}]}', "lacks"),
        (
            b'{"Records": [{"eventName": "ObjectCreated:Put", "eventVersion": "3.0"}]}',
            "unsupported S3 event version",
        ),
    ],
)
def test_malformed_notifications_are_invalid_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        parse_notification(body)
