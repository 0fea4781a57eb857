"""Facts: what rendering learnt about a photo. One model, used everywhere.

The thumbnail worker produces it, the store saves it (one JSON column), and `photo.ready`
and the photo view embed it as it is. Adding a fact means adding a field here and reading
it in `services/thumbnail_worker/exif.py`; nothing else changes.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Camera(_Part):
    make: str | None = None
    model: str | None = None
    lens: str | None = None


class Exposure(_Part):
    exposure_time: float | None = Field(None, description="seconds")
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = Field(
        None, description="millimetres, as recorded (not the 35 mm equivalent)"
    )


class Location(_Part):
    latitude: float = Field(ge=-90, le=90, description="degrees, north positive")
    longitude: float = Field(ge=-180, le=180, description="degrees, east positive")


class PhotoFacts(_Part):
    """Recorded once, when the photo is rendered. `location` is kept only when the owner
    opted in at upload (`keep_location`), and shown only to the owner."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of the original bytes")
    placeholder: str = Field(description="ThumbHash of the upright image, base64")
    taken_at: AwareDatetime | None = Field(
        None,
        description="when it was taken; a camera time with no recorded offset is read as UTC",
    )
    taken_at_local: str | None = Field(
        None,
        description="the camera's own clock (ISO 8601), with its UTC offset when recorded",
    )
    camera: Camera = Camera()
    exposure: Exposure = Exposure()
    location: Location | None = None
