"""Verification of one stored object against its upload intent.

Reads the object's HEAD and its last 64 KiB (one request, Storage.head_and_tail, when
the caller has read nothing yet), its first 64 KiB (more, up to 2 MiB, only if a
header sits behind large metadata), then walks the file's segments from the start to scan
every metadata segment wherever it sits (services/ingest_worker/segments.py: image data is
never scanned or held); the head and the walk read through one ranged GET (ranges.py).
Only GIFs and animated WebPs are streamed through, in 64 KiB chunks, to count their
frames. A PNG declared as JPEG (any declared/actual mismatch outside the HEIF family) is
rejected rather than relabelled: the client signed one type and sent another, which is a
broken or hostile client.
"""

from __future__ import annotations

from enum import StrEnum

from services.ingest_worker.inspect import (
    ByteStream,
    Truncated,
    apng_frames,
    count_gif_frames,
    count_webp_frames,
    find_active_content,
    identify_non_image,
    is_animated_webp,
    isobmff_truncation,
    missing_end_marker,
    webp_truncation,
)
from services.ingest_worker.ranges import Ranges
from services.ingest_worker.reader import Fetch
from services.ingest_worker.segments import TooManySegments, find_hidden_content
from shared.imaging import Header, HeaderError, TooManyPixels, read_header, same_family, sniff
from shared.settings import ALLOWED_CONTENT_TYPES, Settings
from shared.storage import ObjectInfo, Storage
from shared.store import PhotoRecord, Verified

FIRST_READ = 64 * 1024
TAIL_READ = 64 * 1024
# JPEG headers may sit behind large EXIF/ICC segments; give the parser this much at most.
MAX_HEADER_READ = 2 * 1024 * 1024


class Reason(StrEnum):
    """Why an upload was rejected; stable codes the owner's app can act on."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    SIZE_MISMATCH = "size_mismatch"
    SVG = "svg"
    HTML = "html"
    EXECUTABLE = "executable"
    UNSUPPORTED_TYPE = "unsupported_type"
    TYPE_MISMATCH = "type_mismatch"
    CORRUPT = "corrupt"
    TRUNCATED = "truncated"
    POLYGLOT = "polyglot"
    TOO_MANY_PIXELS = "too_many_pixels"
    DIMENSIONS_TOO_LARGE = "dimensions_too_large"
    TOO_MANY_FRAMES = "too_many_frames"
    REPLACED = "replaced"
    UPLOAD_EXPIRED = "upload_expired"


class Rejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_size(info: ObjectInfo, photo: PhotoRecord, settings: Settings) -> None:
    if info.size == 0:
        raise Rejected(Reason.EMPTY, "the uploaded object is empty")
    limit = settings.max_multipart_bytes if photo.upload_id else settings.max_upload_bytes
    if info.size > limit:
        raise Rejected(Reason.TOO_LARGE, f"{info.size} bytes exceeds the limit of {limit} bytes")
    if info.size != photo.declared_size:
        raise Rejected(
            Reason.SIZE_MISMATCH,
            f"declared {photo.declared_size} bytes but {info.size} bytes were stored",
        )


def check_type(head: bytes, photo: PhotoRecord) -> str:
    actual = sniff(head)
    if actual is None or actual not in ALLOWED_CONTENT_TYPES:
        known = identify_non_image(head)
        if known is not None:
            raise Rejected(Reason(known[0]), known[1])
        raise Rejected(Reason.UNSUPPORTED_TYPE, "the bytes are not an accepted image format")
    if not same_family(photo.declared_type, actual):
        raise Rejected(
            Reason.TYPE_MISMATCH, f"declared {photo.declared_type} but the bytes are {actual}"
        )
    return actual


async def verify(
    storage: Storage,
    info: ObjectInfo,
    photo: PhotoRecord,
    settings: Settings,
    *,
    tail: bytes | None = None,
) -> Verified:
    """Raise Rejected with a reason, or return the verified facts. `tail`: the object's
    last TAIL_READ bytes, when they came with `info` (Storage.head_and_tail)."""
    check_size(info, photo, settings)
    key = photo.object_key
    # The tail first: then the head, the header and the segment walk read through one
    # ranged GET (services/ingest_worker/ranges.py), and no read waits for a connection
    # while this one holds another.
    if info.size <= FIRST_READ:
        tail = None
    elif tail is None:
        tail = await storage.get_range(key, max(0, info.size - TAIL_READ), info.size - 1)
    ranges = Ranges(storage, key, info.size)
    try:
        head = await ranges.fetch(0, FIRST_READ - 1)
        content_type = check_type(head, photo)
        if tail is None and info.size > len(head):  # shorter than its HEAD said
            tail = await ranges.fetch(max(0, info.size - TAIL_READ), info.size - 1)
        header = await _check_structure(ranges, info, head, tail or head, content_type, settings)
    finally:
        ranges.close()
    await check_frames(storage, key, content_type, head, settings.max_frames)
    return Verified(
        content_type=content_type,
        size=info.size,
        width=header.width,
        height=header.height,
        etag=info.etag,
    )


async def _check_structure(
    ranges: Ranges,
    info: ObjectInfo,
    head: bytes,
    tail: bytes,
    content_type: str,
    settings: Settings,
) -> Header:
    """Length, header, end marker and riding content, in that order of reasons."""
    # A container that declares more bytes than were stored is provably cut short: say
    # so before its header fails to parse for the same reason.
    await check_declared_length(ranges.fetch, content_type, head, info.size)
    header = await _parse_header(ranges.fetch, info, head, content_type, settings)
    check_dimensions(header, settings)
    missing = missing_end_marker(content_type, tail)
    if missing:
        raise Rejected(Reason.TRUNCATED, missing)
    riding = find_active_content(head, tail) or await _hidden_content(
        ranges.fetch, content_type, info.size, head
    )
    if riding:
        raise Rejected(Reason.POLYGLOT, f"found {riding}")
    return header


async def _hidden_content(fetch: Fetch, content_type: str, size: int, head: bytes) -> str | None:
    try:
        return await find_hidden_content(content_type, fetch, size, head)
    except TooManySegments as exc:
        raise Rejected(Reason.CORRUPT, str(exc)) from exc


def check_dimensions(header: Header, settings: Settings) -> None:
    side = settings.max_image_side
    if header.width > side or header.height > side:
        raise Rejected(
            Reason.DIMENSIONS_TOO_LARGE,
            f"{header.width}x{header.height} exceeds {side} pixels on a side",
        )


async def check_declared_length(fetch: Fetch, content_type: str, head: bytes, size: int) -> None:
    cut = webp_truncation(head, size) if content_type == "image/webp" else None
    if content_type in ("image/heic", "image/heif", "image/avif"):
        cut = await isobmff_truncation(fetch, size)
    if cut:
        raise Rejected(Reason.TRUNCATED, cut)


async def check_frames(
    storage: Storage, key: str, content_type: str, head: bytes, limit: int
) -> None:
    """Animations are capped by frame count; only the first frame is ever rendered."""
    try:
        if content_type == "image/gif":
            frames = await count_gif_frames(ByteStream(storage.stream(key)), limit)
        elif content_type == "image/webp" and is_animated_webp(head):
            frames = await count_webp_frames(ByteStream(storage.stream(key)), limit)
        elif content_type == "image/png":
            frames = apng_frames(head)
        else:
            return
    except Truncated as exc:
        raise Rejected(Reason.TRUNCATED, str(exc)) from exc
    if frames > limit:
        raise Rejected(Reason.TOO_MANY_FRAMES, f"more than {limit} animation frames")


async def _parse_header(
    fetch: Fetch,
    info: ObjectInfo,
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
                longer = await fetch(0, want - 1)
            # Nothing more to read, or the object is shorter than its HEAD said.
            if len(longer) <= len(head):
                raise Rejected(Reason.CORRUPT, f"image header does not parse: {exc}") from exc
            head = longer
