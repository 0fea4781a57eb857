"""The shapes of the multipart upload routes (services/gateway/multipart.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from services.gateway.models import PartNumber, _Shape

MAX_PARTS_PER_CALL = 100


class PartsRequest(_Shape):
    part_numbers: list[PartNumber] = Field(
        min_length=1, max_length=MAX_PARTS_PER_CALL, description="1 to part_count"
    )


class PartUrl(_Shape):
    part_number: int
    url: str = Field(description="a presigned S3 UploadPart PUT")
    headers: dict[str, str] = Field(
        description="send exactly these (Content-Length is the part's exact size; "
        "browsers set it themselves)"
    )


class PartUrls(_Shape):
    parts: list[PartUrl]
    expires_at: datetime = Field(description="when these URLs lapse")


class StoredPartView(_Shape):
    part_number: int
    etag: str
    size: int


class PartsListing(_Shape):
    """What storage holds of the upload, to resume it: send only the parts missing."""

    upload_id: str
    part_size: int
    part_count: int
    parts: list[StoredPartView] = Field(description="by part number")


class CompletedPart(_Shape):
    part_number: PartNumber
    etag: str = Field(min_length=1, max_length=200, description="the part's ETag, as S3 sent it")


class CompleteRequest(_Shape):
    parts: list[CompletedPart] | None = Field(
        None,
        max_length=10_000,
        description="a multipart upload's parts, every one from 1 to part_count in order; "
        "left out for a single upload",
    )
