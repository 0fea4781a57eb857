"""Storage notifications in MinIO's, Ceph's and AWS's formats, normalised to StoredObject.

All three send S3 event records (`{"Records": [...]}`, event version 2.x): MinIO and Ceph
publish them to the storage exchange, AWS delivers them through SQS. AWS and MinIO
form-encode object keys, Ceph sends them raw; tests/s3events.py builds each shape. Every
claim in an event (size, type) is only a hint; verification reads the object itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from shared.errors import InvalidMessage


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    event: str
    source: str
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None


def parse_notification(body: bytes) -> list[StoredObject]:
    """Objects created according to one notification; [] for test and other events."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"storage notification is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidMessage("storage notification is not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return []
    records = doc.get("Records")
    if not isinstance(records, list):
        raise InvalidMessage("storage notification has no Records list")
    return [obj for obj in map(_record, records) if obj is not None]


def _record(record: Any) -> StoredObject | None:
    if not isinstance(record, dict):
        raise InvalidMessage("storage notification record is not an object")
    name = str(record.get("eventName", ""))
    name = name.removeprefix("s3:")
    if not name.startswith("ObjectCreated:"):
        return None
    version = str(record.get("eventVersion", "2"))
    if version.split(".")[0] != "2":
        raise InvalidMessage(f"unsupported S3 event version {version}")
    try:
        s3 = record["s3"]
        bucket = str(s3["bucket"]["name"])
        obj = s3["object"]
        raw_key = str(obj["key"])
    except (KeyError, TypeError) as exc:
        raise InvalidMessage(f"S3 event record lacks {exc}") from exc
    source = str(record.get("eventSource", ""))
    return StoredObject(
        bucket=bucket,
        # AWS and MinIO form-encode keys; Ceph RGW sends them raw (a "+" is a plus).
        key=raw_key if source == "ceph:s3" else unquote_plus(raw_key),
        event=name,
        source=source,
        size=_size(obj.get("size")),
        etag=obj.get("eTag") or obj.get("etag") or None,
        version_id=obj.get("versionId") or None,
    )


def _size(value: Any) -> int | None:
    # AWS and MinIO send a number, Ceph a string, and zero-byte objects may omit it.
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidMessage(f"S3 event object size {value!r} is not a number") from None
