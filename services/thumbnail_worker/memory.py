"""Rendering memory: what one render may take at its peak, and a budget renders share.

Each render reserves its estimated peak before it decodes anything, so renders running at
once never add up past the budget: a render waits for room, and one that could never fit
is refused instead of waiting forever. The estimate is read from the header alone (after
JPEG's draft scale), from Pillow's in-memory layout: 1 byte a pixel for L, P and 1, 2 for
16-bit greys, 4 for everything else (RGB is stored as RGBX, LA as LA in 32 bits).
"""

from __future__ import annotations

import asyncio
import io
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from PIL import Image

from services.thumbnail_worker import webp
from shared.imaging import PIL_FORMATS

MB = 1 << 20
# Pixels one band of the reduction covers (see render._reduced): two band-sized copies
# (cropped, converted) exist at once.
BAND_PIXELS = 1 << 20
# Box reduction keeps the remaining scale at least this before the resampling filter.
REDUCING_GAP = 1.5
# The reduced image, its resampled and transposed/colour-managed copies, 4 bytes a pixel.
_WORKING_COPIES = 3
# Decoder state, encoders, the placeholder and EXIF, with room to spare: a 40 MP CMYK
# JPEG, a few MB of pixels after its draft scale, peaks at 18 MB in all (`make bench`).
_FIXED_OVERHEAD = 12 * MB
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def bytes_per_pixel(mode: str) -> int:
    return _BYTES_PER_PIXEL.get(mode, 4)


def reduction_factor(size: tuple[int, int], target: tuple[int, int]) -> int:
    """The integer box-reduction that still leaves REDUCING_GAP of scale for resampling."""
    ratio = min(size[0] / target[0], size[1] / target[1])
    return max(1, int(ratio / REDUCING_GAP))


def reduced_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    factor = reduction_factor(size, target)
    return math.ceil(size[0] / factor), math.ceil(size[1] / factor)


def fit(size: tuple[int, int], longest_side: int) -> tuple[int, int]:
    """`size` scaled to `longest_side`, never up."""
    width, height = size
    longest = max(width, height)
    if longest <= longest_side:
        return size
    scale = longest_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def peak_bytes(size: tuple[int, int], mode: str, largest: int, data_size: int = 0) -> int:
    """The most memory rendering an image decoded at `size` in `mode` takes: the decoded
    pixels, two bands, the reduced working copies, the compressed bytes, and overhead."""
    width, height = size
    factor = reduction_factor(size, fit(size, largest))
    reduced = math.ceil(width / factor) * math.ceil(height / factor)
    band = min(width * height, max(BAND_PIXELS, width * factor))
    return (
        width * height * bytes_per_pixel(mode)
        + 2 * band * 4
        + _WORKING_COPIES * reduced * 4
        + data_size
        + _FIXED_OVERHEAD
    )


def coded_planes_bytes(data: bytes) -> float:
    """Bytes a pixel the AVIF/HEIF decoder's own YUV(A) planes take beside Pillow's image,
    from each item's av1C or hvcC box (colour, and alpha as its own item): samples a pixel
    by chroma subsampling, 2 bytes a sample past 8 bits (measured peaks: `make bench`).
    The four costliest boxes found anywhere count, so look-alike bytes placed before the
    real boxes can only raise the estimate; an unreadable box counts as the costliest,
    16-bit 4:4:4 with alpha."""
    costs: list[float] = []
    at = 0
    while len(costs) < _MAX_BOXES and (at := data.find(b"av1C", at) + 1) > 0:
        flags = data[at + 5] if len(data) > at + 5 else 0xFF
        deep, mono = bool(flags & 0x40), bool(flags & 0x10)
        sub_x, sub_y = bool(flags & 0x08), bool(flags & 0x04)
        costs.append(_samples(mono, sub_x, sub_y) * (2 if deep else 1))
    at = 0
    while len(costs) < 2 * _MAX_BOXES and (at := data.find(b"hvcC", at) + 1) > 0:
        fields = data[at + 19 : at + 22]
        if len(fields) < 3:
            costs.append(6)
            continue
        chroma = fields[0] & 0x03
        deep = (fields[1] & 0x07) > 0 or (fields[2] & 0x07) > 0
        costs.append(_samples(chroma == 0, chroma in (1, 2), chroma == 1) * (2 if deep else 1))
    return sum(sorted(costs, reverse=True)[:4]) if costs else 8.0


_MAX_BOXES = 1000  # look-alikes past this many make the estimate no lower


def _samples(mono: bool, sub_x: bool, sub_y: bool) -> float:
    return 1.0 if mono else 1 + 2 / ((2 if sub_x else 1) * (2 if sub_y else 1))


def estimate(data: bytes, content_type: str, largest: int) -> int:
    """The peak of rendering `data` (largest rendition `largest` px), from its header."""
    with Image.open(io.BytesIO(data), formats=[PIL_FORMATS[content_type]]) as img:
        img.draft("RGB", fit(img.size, largest))
        if content_type in ("image/avif", "image/heic", "image/heif"):
            # dav1d keeps its own pictures beside libavif's planes: AVIF holds them twice.
            copies = 2 if content_type == "image/avif" else 1
            per_pixel = copies * coded_planes_bytes(data) + 2  # + the RGB conversion
            planes = math.ceil(per_pixel * img.width * img.height)
            return peak_bytes(img.size, img.mode, largest, len(data)) + planes
        if content_type != "image/webp":
            return peak_bytes(img.size, img.mode, largest, len(data))
        if getattr(img, "n_frames", 1) == 1 and webp.available():
            lossless = webp.is_lossless(data)
            return still_webp_peak(img.size, largest, lossless, img.mode == "RGBA") + len(data)
        full = img.width * img.height * 4
        return peak_bytes(img.size, "RGBA", largest, len(data)) + (webp.FALLBACK_COPIES - 1) * full


def still_webp_peak(size: tuple[int, int], largest: int, lossless: bool, alpha: bool) -> int:
    """libwebp scales to the largest rendition while decoding, after a full-size pass
    for lossless pixels or alpha."""
    scaled = fit(size, largest)
    per_pixel = webp.LOSSLESS_BYTES if lossless else webp.LOSSY_ALPHA_BYTES if alpha else 0
    return peak_bytes(scaled, "RGBA", largest) + size[0] * size[1] * per_pixel


def worst_case(max_pixels: int, max_side: int, largest: int) -> int:
    """The peak of the costliest still image the pixel limits let through: 4 bytes a
    pixel (RGBA, CMYK, grey and alpha) or a lossless WebP, at the shapes where the
    reduction helps least.
    (An animated WebP decodes through Pillow at FALLBACK_COPIES times that; one the
    budget cannot hold is refused when it comes, see MemoryBudget.reserve.)"""
    square = math.isqrt(max_pixels)
    shapes = [(square, square), (max_side, max(1, max_pixels // max_side))]
    return max(
        max(peak_bytes(shape, "RGBA", largest), still_webp_peak(shape, largest, True, True))
        for shape in shapes
    )


class TooLargeToRender(Exception):
    """One render would need more than the whole budget."""


@dataclass
class MemoryBudget:
    """A semaphore counted in bytes, shared by the renders of one worker. Waiters are
    admitted in arrival order: with room checked alone, a stream of small renders kept a
    large one waiting until its handler timed out (measured: still waiting after 10 s of
    60 MB renders against a 200 MB one)."""

    total: int
    reserved: int = 0
    high_water: int = 0  # the most ever reserved at once
    on_change: Callable[[int], None] = lambda reserved: None

    def __post_init__(self) -> None:
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, amount: int) -> None:
        if amount > self.total:
            raise TooLargeToRender(
                f"rendering needs about {amount // MB} MB, more than the render memory "
                f"budget of {self.total // MB} MB (DARKROOM_RENDER_MEMORY_MB)"
            )
        if not self._waiters and self.reserved + amount <= self.total:
            self._take(amount)
            return
        admitted = asyncio.get_running_loop().create_future()
        self._waiters.append((amount, admitted))
        try:
            await admitted
        except asyncio.CancelledError:
            if admitted.done() and not admitted.cancelled():
                self.release(amount)  # admitted as it was cancelled: give the room back
            else:
                self._waiters.remove((amount, admitted))
                self._admit()
            raise

    def release(self, amount: int) -> None:
        self.reserved -= amount
        self.on_change(self.reserved)
        self._admit()

    @asynccontextmanager
    async def reserve(self, amount: int) -> AsyncIterator[None]:
        await self.acquire(amount)
        try:
            yield
        finally:
            self.release(amount)

    def _take(self, amount: int) -> None:
        self.reserved += amount
        self.high_water = max(self.high_water, self.reserved)
        self.on_change(self.reserved)

    def _admit(self) -> None:
        while self._waiters:
            amount, admitted = self._waiters[0]
            if admitted.done():  # its waiter was cancelled
                self._waiters.popleft()
                continue
            if self.reserved + amount > self.total:
                return
            self._waiters.popleft()
            self._take(amount)
            admitted.set_result(None)
