"""Verification of one stored object against its upload intent.

Reads the object's HEAD and at most a bounded prefix of it, never the whole object.
A PNG declared as JPEG (or any declared/actual mismatch outside the HEIF family) is
rejected: the client signed one type and sent another, which is a broken or hostile
client, and serving it under either label would be wrong for someone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.imaging import Header, HeaderError, TooManyPixels, read_header, same_family, sniff
from shared.settings import ALLOWED_CONTENT_TYPES, Settings
from shared.storage import ObjectInfo, Storage
from shared.store import PhotoRecord

FIRST_READ = 64 * 1024
# JPEG headers may sit behind large EXIF/ICC segments; give the parser this much at most.
MAX_HEADER_READ = 2 * 1024 * 1024


class Reason(StrEnum):
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    SIZE_MISMATCH = "size_mismatch"
    UNSUPPORTED_TYPE = "unsupported_type"
    TYPE_MISMATCH = "type_mismatch"
    CORRUPT = "corrupt"
    TOO_MANY_PIXELS = "too_many_pixels"
    DIMENSIONS_TOO_LARGE = "dimensions_too_large"
    REPLACED = "replaced"


class Rejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Verified:
    content_type: str
    size: int
    width: int
    height: int
    etag: str | None


def check_size(info: ObjectInfo, photo: PhotoRecord, settings: Settings) -> None:
    if info.size == 0:
        raise Rejected(Reason.EMPTY, "the uploaded object is empty")
    if info.size > settings.max_upload_bytes:
        raise Rejected(
            Reason.TOO_LARGE,
            f"{info.size} bytes exceeds the limit of {settings.max_upload_bytes} bytes",
        )
    if info.size != photo.declared_size:
        raise Rejected(
            Reason.SIZE_MISMATCH,
            f"declared {photo.declared_size} bytes but {info.size} bytes were stored",
        )


def check_type(head: bytes, photo: PhotoRecord) -> str:
    actual = sniff(head)
    if actual is None or actual not in ALLOWED_CONTENT_TYPES:
        raise Rejected(Reason.UNSUPPORTED_TYPE, "the bytes are not an accepted image format")
    if not same_family(photo.declared_type, actual):
        raise Rejected(
            Reason.TYPE_MISMATCH, f"declared {photo.declared_type} but the bytes are {actual}"
        )
    return actual


async def verify(
    storage: Storage, info: ObjectInfo, photo: PhotoRecord, settings: Settings
) -> Verified:
    """Raise Rejected with a reason, or return the verified facts."""
    check_size(info, photo, settings)
    head = await storage.get_range(photo.object_key, 0, FIRST_READ - 1)
    content_type = check_type(head, photo)
    header = await _parse_header(storage, info, photo.object_key, head, content_type, settings)
    side = settings.max_image_side
    if header.width > side or header.height > side:
        raise Rejected(
            Reason.DIMENSIONS_TOO_LARGE,
            f"{header.width}x{header.height} exceeds {side} pixels on a side",
        )
    return Verified(content_type, info.size, header.width, header.height, info.etag)


async def _parse_header(
    storage: Storage,
    info: ObjectInfo,
    key: str,
    head: bytes,
    content_type: str,
    settings: Settings,
) -> Header:
    """Parse the header from the object's prefix, reading more (up to MAX_HEADER_READ)
    only while the parser needs it and the object has it."""
    while True:
        try:
            return read_header(head, content_type, max_pixels=settings.max_image_pixels)
        except TooManyPixels as exc:
            raise Rejected(Reason.TOO_MANY_PIXELS, str(exc)) from exc
        except HeaderError as exc:
            want = min(len(head) * 4, info.size, MAX_HEADER_READ)
            longer = b""
            if exc.incomplete and want > len(head):
                longer = await storage.get_range(key, 0, want - 1)
            # Nothing more to read, or the object is shorter than its HEAD said.
            if len(longer) <= len(head):
                raise Rejected(Reason.CORRUPT, f"image header does not parse: {exc}") from exc
            head = longer
