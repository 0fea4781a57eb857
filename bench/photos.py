"""Photo-like test images for the benchmarks: smooth colour regions, mid-frequency texture
and fine grain, so JPEG sizes and decode costs resemble a camera's (flat colour would not)."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageChops, ImageDraw


def photo(width: int, height: int, *, seed: int = 5) -> Image.Image:
    rng = random.Random(seed)
    blobs = _noise(rng, "RGB", (max(2, width // 500), max(2, height // 500)))
    base = blobs.resize((width, height), Image.Resampling.BICUBIC)
    _shapes(rng, base)
    texture = _noise(rng, "L", (width // 16, height // 16)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    grain = _noise(rng, "L", (width, height))
    detail = ImageChops.add(texture.point(lambda v: v * 0.25), grain.point(lambda v: v * 0.06))
    # Texture and grain are centred on zero: subtract the means added above (32 + 8).
    detail_rgb = Image.merge("RGB", (detail, detail, detail))
    return ImageChops.add(base, detail_rgb, scale=1.0, offset=-40)


def encoded(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        img.save(out, "JPEG", quality=90)
    else:
        img.save(out, fmt)
    return out.getvalue()


def _shapes(rng: random.Random, img: Image.Image) -> None:
    """Hard edges, as objects in a scene have."""
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(40):
        x, y = rng.randrange(w), rng.randrange(h)
        box = (x, y, x + rng.randrange(w // 20, w // 4), y + rng.randrange(h // 20, h // 4))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.line(box, fill=colour, width=rng.randrange(2, 12))


def _noise(rng: random.Random, mode: str, size: tuple[int, int]) -> Image.Image:
    bands = len(mode)
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * bands))
