"""Reading EXIF into the photo's facts: when and with what it was taken, and where.

EXIF is attacker-controlled: every reader here turns a missing, mistyped, out-of-range or
garbled value into None instead of raising.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from numbers import Real
from typing import Any, TypeVar

from PIL import Image

from shared.facts import Camera, Exposure, Location, PhotoFacts

T = TypeVar("T")

_IFD0_ORIENTATION = 0x0112
_IFD0_MAKE = 0x010F
_IFD0_MODEL = 0x0110
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_EXPOSURE_TIME = 0x829A
_F_NUMBER = 0x829D
_ISO = 0x8827
_DATETIME_ORIGINAL = 0x9003
_DATETIME_DIGITIZED = 0x9004
_OFFSET_ORIGINAL = 0x9011
_OFFSET_DIGITIZED = 0x9012
_FOCAL_LENGTH = 0x920A
_SUBSEC_ORIGINAL = 0x9291
_SUBSEC_DIGITIZED = 0x9292
_LENS_MODEL = 0xA434

_MAX_TEXT = 128
_DATETIME = re.compile(r"(\d{4}):(\d\d):(\d\d)[ T](\d\d):(\d\d):(\d\d)")
_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)")


@dataclass(frozen=True)
class Exif:
    """What the EXIF block says; every part may be missing."""

    orientation: int = 1
    # The camera's wall clock; timezone-aware (a fixed UTC offset) only when EXIF
    # recorded the offset, naive otherwise: a naive value's zone is unknown, not UTC.
    taken_at: datetime | None = None
    camera: Camera = field(default_factory=Camera)
    exposure: Exposure = field(default_factory=Exposure)
    location: Location | None = None


def photo_facts(data: bytes, exif: Exif, *, placeholder: str) -> PhotoFacts:
    """The photo's facts, location included: the caller drops it without the owner's
    opt-in. A camera time without an offset is filed as UTC for ordering and filtering,
    and kept as the camera showed it."""
    local = exif.taken_at
    return PhotoFacts(
        sha256=hashlib.sha256(data).hexdigest(),
        placeholder=placeholder,
        taken_at=local if local is None or local.tzinfo else local.replace(tzinfo=UTC),
        taken_at_local=local.isoformat() if local else None,
        camera=exif.camera,
        exposure=exif.exposure,
        location=exif.location,
    )


def read_exif(img: Image.Image) -> Exif:
    """What the EXIF block of an opened image says; never raises (short of MemoryError)."""
    exif = _guard(img.getexif)
    if exif is None:
        return Exif()
    ifd0: Mapping[int, Any] = exif
    sub = _guard(lambda: exif.get_ifd(_EXIF_IFD)) or {}
    gps = _guard(lambda: exif.get_ifd(_GPS_IFD)) or {}
    return Exif(
        orientation=_guard(lambda: _orientation(ifd0.get(_IFD0_ORIENTATION))) or 1,
        taken_at=_guard(lambda: _taken_at(sub)),
        camera=Camera(
            make=_guard(lambda: _text(ifd0.get(_IFD0_MAKE))),
            model=_guard(lambda: _text(ifd0.get(_IFD0_MODEL))),
            lens=_guard(lambda: _text(sub.get(_LENS_MODEL))),
        ),
        exposure=Exposure(
            exposure_time=_guard(lambda: _positive(sub.get(_EXPOSURE_TIME), limit=3600 * 24)),
            f_number=_guard(lambda: _positive(sub.get(_F_NUMBER), limit=1000)),
            iso=_guard(lambda: _iso(sub.get(_ISO))),
            focal_length=_guard(lambda: _positive(sub.get(_FOCAL_LENGTH), limit=100_000)),
        ),
        location=_guard(lambda: _location(gps)),
    )


def _guard(read: Callable[[], T | None]) -> T | None:
    try:
        return read()
    except MemoryError:
        raise
    except Exception:
        # Pillow's EXIF parser raises anything on hostile input; a fact we cannot read
        # is a fact we do not have.
        return None


def _orientation(value: object) -> int | None:
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch for ch in value if ch.isprintable()).strip()
    return cleaned[:_MAX_TEXT] or None


def _number(value: object) -> float | None:
    if isinstance(value, tuple) and len(value) >= 1:
        value = value[0]  # some writers store single values as one-element arrays
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _positive(value: object, *, limit: float) -> float | None:
    number = _number(value)
    return number if number is not None and 0 < number <= limit else None


def _iso(value: object) -> int | None:
    number = _positive(value, limit=10_000_000)
    return round(number) if number is not None else None


def _taken_at(sub: Mapping[int, Any]) -> datetime | None:
    for stamp, offset, subsec in (
        (_DATETIME_ORIGINAL, _OFFSET_ORIGINAL, _SUBSEC_ORIGINAL),
        (_DATETIME_DIGITIZED, _OFFSET_DIGITIZED, _SUBSEC_DIGITIZED),
    ):
        moment = _datetime(_text(sub.get(stamp)))
        if moment is not None:
            moment = moment.replace(microsecond=_subsec(_text(sub.get(subsec))))
            return moment.replace(tzinfo=_utc_offset(_text(sub.get(offset))))
    return None


def _datetime(text: str | None) -> datetime | None:
    match = _DATETIME.fullmatch(text or "")
    if match is None:
        return None  # includes the blank "    :  :     :  :  " placeholders cameras write
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None  # "0000:00:00 00:00:00" and other impossible dates


def _subsec(text: str | None) -> int:
    digits = (text or "").strip()
    return int(digits[:6].ljust(6, "0")) if digits.isdigit() else 0


def _utc_offset(text: str | None) -> timezone | None:
    match = _OFFSET.fullmatch(text or "")
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta > timedelta(hours=14) or int(minutes) >= 60:
        return None
    return timezone(-delta if sign == "-" else delta)


def _location(gps: Mapping[int, Any]) -> Location | None:
    lat = _degrees(gps.get(2), gps.get(1), positive="N", negative="S", limit=90)
    lon = _degrees(gps.get(4), gps.get(3), positive="E", negative="W", limit=180)
    if lat is None or lon is None:
        return None
    return Location(latitude=round(lat, 7), longitude=round(lon, 7))


def _degrees(
    value: object, ref: object, *, positive: str, negative: str, limit: float
) -> float | None:
    hemisphere = _text(ref)
    if hemisphere not in (positive, negative) or not isinstance(value, tuple):
        return None
    parts = [_number(part) for part in value[:3]]
    numbers = [p for p in parts if p is not None and p >= 0]
    if len(numbers) != 3:
        return None
    deg, minutes, seconds = numbers
    total = deg + minutes / 60 + seconds / 3600
    if total > limit:
        return None
    return -total if hemisphere == negative else total
