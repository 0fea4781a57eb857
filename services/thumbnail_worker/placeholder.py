"""ThumbHash placeholders: a ~25-byte blurry stand-in clients paint before the thumbnail loads.

Written from Evan Wallace's public description of the format: the image, composited over
its average colour, is converted to luminance (L), two chroma channels (P, Q) and alpha (A),
and each channel keeps the low-frequency DCT coefficients of a triangle, quantised to 4
bits, behind a 5- or 6-byte header with the DC terms and scales.
"""

from __future__ import annotations

import base64
import math
import operator
from dataclasses import dataclass

from PIL import Image

# Pure-Python DCT: a small input keeps it near a millisecond, and a placeholder keeps at
# most 7 cosine terms per axis anyway.
_SAMPLE_SIDE = 32

Channel = list[float]


@dataclass(frozen=True)
class _Encoded:
    dc: float
    ac: list[float]
    scale: float


def thumbhash(img: Image.Image) -> str:
    """The ThumbHash of an RGB or RGBA image, base64-encoded (standard alphabet, padded)."""
    return base64.b64encode(thumbhash_bytes(img)).decode("ascii")


def thumbhash_bytes(img: Image.Image) -> bytes:
    small = img.copy()
    small.thumbnail((_SAMPLE_SIDE, _SAMPLE_SIDE), Image.Resampling.BOX)
    small = small.convert("RGBA")
    w, h = small.size
    r, g, b, a = ([v / 255 for v in band.tobytes()] for band in small.split())
    has_alpha = min(a) < 1
    l_limit = 5 if has_alpha else 7  # alpha takes bytes from luminance detail
    lx = max(1, _round(l_limit * w / max(w, h)))
    ly = max(1, _round(l_limit * h / max(w, h)))
    if has_alpha:
        r, g, b = _over_average(r, g, b, a)
    lum = _encode_channel(
        [(x + y + z) / 3 for x, y, z in zip(r, g, b, strict=True)], w, h, max(3, lx), max(3, ly)
    )
    p = _encode_channel([(x + y) / 2 - z for x, y, z in zip(r, g, b, strict=True)], w, h, 3, 3)
    q = _encode_channel([x - y for x, y in zip(r, g, strict=True)], w, h, 3, 3)
    alpha = _encode_channel(a, w, h, 5, 5) if has_alpha else None
    return _pack(lum, p, q, alpha, lx if w <= h else ly, landscape=w > h)


def _over_average(r: Channel, g: Channel, b: Channel, a: Channel) -> tuple[Channel, ...]:
    """The colour channels composited over the image's average (alpha-weighted) colour."""
    total = sum(a)
    composited = []
    for channel in (r, g, b):
        avg = sum(map(operator.mul, channel, a)) / total if total else 0.0
        composited.append([avg * (1 - al) + al * v for v, al in zip(channel, a, strict=True)])
    return tuple(composited)


def _encode_channel(channel: Channel, w: int, h: int, nx: int, ny: int) -> _Encoded:
    """DCT coefficients of the triangle cx * ny < nx * (ny - cy), AC terms scaled to 0..1."""
    # The DCT is separable: project every row on each horizontal cosine once, then each
    # coefficient is one short dot product. This runs holding the GIL, which renders in
    # the other pool threads then wait for: it took the hash from 3 to about 1.3 ms.
    rows = [channel[y * w : (y + 1) * w] for y in range(h)]
    by_cx = [_dot_rows(rows, _cosines(cx, w)) for cx in range(nx)]
    dc, ac, scale = 0.0, [], 0.0
    for cy in range(ny):
        fy = _cosines(cy, h)
        cx = 0
        while cx * ny < nx * (ny - cy):
            f = sum(map(operator.mul, by_cx[cx], fy)) / (w * h)
            if cx or cy:
                ac.append(f)
                scale = max(scale, abs(f))
            else:
                dc = f
            cx += 1
    if scale:
        ac = [0.5 + 0.5 / scale * f for f in ac]
    return _Encoded(dc, ac, scale)


def _cosines(k: int, n: int) -> list[float]:
    return [math.cos(math.pi / n * k * (i + 0.5)) for i in range(n)]


def _dot_rows(rows: list[Channel], weights: list[float]) -> list[float]:
    return [sum(map(operator.mul, row, weights)) for row in rows]


def _pack(
    lum: _Encoded,
    p: _Encoded,
    q: _Encoded,
    alpha: _Encoded | None,
    l_count: int,
    *,
    landscape: bool,
) -> bytes:
    header24 = (
        _round(63 * lum.dc)
        | _round(31.5 + 31.5 * p.dc) << 6
        | _round(31.5 + 31.5 * q.dc) << 12
        | _round(31 * lum.scale) << 18
        | (alpha is not None) << 23
    )
    header16 = l_count | _round(63 * p.scale) << 3 | _round(63 * q.scale) << 9 | landscape << 15
    out = bytearray(header24.to_bytes(3, "little") + header16.to_bytes(2, "little"))
    factors = [*lum.ac, *p.ac, *q.ac]
    if alpha is not None:
        out.append(_round(15 * alpha.dc) | _round(15 * alpha.scale) << 4)
        factors += alpha.ac
    start = len(out)
    out.extend(bytes((len(factors) + 1) // 2))
    for i, f in enumerate(factors):
        out[start + i // 2] |= _round(15 * f) << ((i & 1) * 4)
    return bytes(out)


def _round(x: float) -> int:
    """Half rounds up, as in the reference encoder (Python's round() rounds half to even)."""
    return math.floor(x + 0.5)
