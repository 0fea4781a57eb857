"""The load's files, generated: valid photos, each one different, and invalid uploads in
the spirit of tests/hostile.py, each declaring a type it will be rejected for."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Sample:
    kind: str
    data: bytes
    content_type: str
    valid: bool


def _picture(rng: random.Random, width: int, height: int) -> Image.Image:
    """A flat image with a random rectangle: every valid upload has different bytes."""
    img = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    x, y = rng.randrange(width // 2), rng.randrange(height // 2)
    colour = tuple(rng.randrange(256) for _ in range(3))
    ImageDraw.Draw(img).rectangle((x, y, x + width // 3, y + height // 3), fill=colour)
    return img


def _encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def _jpeg(rng: random.Random) -> bytes:
    return _encode(_picture(rng, 640, 400), "JPEG", quality=85)


def _png(rng: random.Random) -> bytes:
    return _encode(_picture(rng, 320, 240), "PNG")


def valid(rng: random.Random) -> Sample:
    if rng.random() < 0.7:
        return Sample("jpeg", _jpeg(rng), "image/jpeg", valid=True)
    return Sample("png", _png(rng), "image/png", valid=True)


def invalid(rng: random.Random) -> Sample:
    choice = rng.randrange(5)
    if choice == 0:
        text = b"just some words, no picture %d\n" % rng.randrange(10**9)
        return Sample("text as jpeg", text * 10, "image/jpeg", valid=False)
    if choice == 1:
        jpeg = _jpeg(rng)
        return Sample("truncated jpeg", jpeg[: len(jpeg) // 2], "image/jpeg", valid=False)
    if choice == 2:
        return Sample("png as jpeg", _png(rng), "image/jpeg", valid=False)
    if choice == 3:
        page = b"<!DOCTYPE html><html><body><script>alert(%d)</script></body></html>"
        return Sample("html as jpeg", page % rng.randrange(10**9), "image/jpeg", valid=False)
    polyglot = _jpeg(rng) + b"<html><script>alert(document.cookie)</script>"
    return Sample("jpeg with html appended", polyglot, "image/jpeg", valid=False)


def build(count: int, invalid_fraction: float, rng: random.Random) -> list[Sample]:
    return [invalid(rng) if rng.random() < invalid_fraction else valid(rng) for _ in range(count)]
