"""What the API answers, as small typed records. Each keeps the whole answer in `raw`, so
a field the server adds later is never lost to an older client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FINAL = ("ready", "rejected")

# Mirrors the server's accepted types (the client never imports the server): what the
# CLI picks up from folders and what `upload` declares when it is not told.
ACCEPTED_TYPES: dict[str, tuple[str, ...]] = {
    "image/jpeg": (".jpg", ".jpeg", ".jpe"),
    "image/png": (".png",),
    "image/webp": (".webp",),
    "image/gif": (".gif",),
    "image/heic": (".heic",),
    "image/heif": (".heif",),
    "image/avif": (".avif",),
}


@dataclass(frozen=True)
class Photo:
    """A photo as `GET /v1/photos/{id}` shows it (the sealed view has fewer fields)."""

    id: str
    status: str
    sealed: bool
    reason: str | None
    reason_detail: str | None
    filename: str | None
    raw: dict[str, Any]
    duplicate: bool = False  # answered by `upload` for bytes already uploaded

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Photo:
        return cls(
            id=raw["id"],
            status=raw["status"],
            sealed=bool(raw.get("sealed", False)),
            reason=raw.get("reason"),
            reason_detail=raw.get("reason_detail"),
            filename=raw.get("filename"),
            raw=raw,
        )

    @property
    def final(self) -> bool:
        """Ready or rejected: nothing more will happen to it but deletion."""
        return self.status in FINAL


@dataclass(frozen=True)
class Event:
    """One message of the live stream: `data` is the event model's JSON (`photo.ready`,
    `photo.rejected`, `album.revealed`...). Type `reset` means events may have been
    missed: list again; its `data` is `{reason, detail}`."""

    id: str | None
    type: str
    timestamp: str | None
    data: dict[str, Any]


@dataclass
class UploadState:
    """Where a multipart upload stands: enough to carry on from another process.

    Persist `to_json()` (the CLI keeps it in its pending list) and hand
    `UploadState.from_json(...)` to `Client.upload(..., resume=state)`; storage is asked
    which parts it already holds, so a state saved before the last parts finished is
    still right."""

    photo_id: str
    upload_id: str
    part_size: int
    part_count: int
    size: int
    sha256: str
    etags: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "photo_id": self.photo_id,
            "upload_id": self.upload_id,
            "part_size": self.part_size,
            "part_count": self.part_count,
            "size": self.size,
            "sha256": self.sha256,
            "etags": {str(n): etag for n, etag in sorted(self.etags.items())},
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> UploadState:
        return cls(
            photo_id=str(raw["photo_id"]),
            upload_id=str(raw["upload_id"]),
            part_size=int(raw["part_size"]),
            part_count=int(raw["part_count"]),
            size=int(raw["size"]),
            sha256=str(raw["sha256"]),
            etags={int(n): str(e) for n, e in dict(raw.get("etags", {})).items()},
        )

    def part_range(self, number: int) -> tuple[int, int]:
        """Offset and length of part `number` (1-based): all `part_size` but the last."""
        offset = (number - 1) * self.part_size
        return offset, min(self.part_size, self.size - offset)

    @property
    def missing(self) -> list[int]:
        return [n for n in range(1, self.part_count + 1) if n not in self.etags]
