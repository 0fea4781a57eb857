"""Render memory at the pixel limit: the real peak of rendering the costliest formats,
each in a fresh child process (its RSS high-water mark above what it held before), against
the worker's estimate and its render memory budget.

    python -m bench.memory    prints `render memory: worst case N MB at the pixel limit
                              (FORMAT), budget M MB`; exits 1 if a peak passes its
                              estimate or the worst case passes the budget
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from services.thumbnail_worker.cgroups import default_render_memory_mb
from services.thumbnail_worker.memory import MB, estimate
from services.thumbnail_worker.render import DEFAULT_RENDITIONS
from shared.imaging import configure_pillow

Size = tuple[int, int]


def _png(img: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=1, **params)
    return out.getvalue()


def grey_alpha(size: Size) -> bytes:
    return _png(Image.new("LA", size, (128, 200)))


def grey16(size: Size) -> bytes:
    return _png(Image.new("I;16", size, 40000))


def rgba(size: Size) -> bytes:
    return _png(Image.new("RGBA", size, (10, 120, 200, 128)))


def palette(size: Size) -> bytes:
    return _png(Image.new("P", size, 1), transparency=0)


def rgba16(size: Size) -> bytes:
    """Pillow writes no 16-bit RGBA PNG: chunks by hand, rows streamed through zlib."""
    width, height = size

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\x00" + b"\x12\x34\x56\x78\x9a\xbc\x80\x00" * width
    packer = zlib.compressobj(1)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def cmyk(size: Size) -> bytes:
    out = io.BytesIO()
    Image.new("CMYK", size, (10, 20, 30, 40)).save(out, "JPEG", quality=80)
    return out.getvalue()


def _noise(size: Size, mode: str) -> Image.Image:
    grain = Image.effect_noise(size, 60).convert("L")
    return Image.merge(mode, [grain] * len(mode))


def lossless_webp(size: Size) -> bytes:
    out = io.BytesIO()
    _noise(size, "RGBA").save(out, "WEBP", lossless=True, method=0)
    return out.getvalue()


def lossy_alpha_webp(size: Size) -> bytes:
    out = io.BytesIO()
    _noise(size, "RGBA").save(out, "WEBP", quality=50, method=0)
    return out.getvalue()


def animated_webp(size: Size) -> bytes:
    out = io.BytesIO()
    frame = Image.new("RGBA", size, (10, 120, 200, 128))
    other = Image.new("RGBA", size, (200, 20, 10, 255))
    frame.save(out, "WEBP", save_all=True, append_images=[other], method=0)
    return out.getvalue()


def avif_alpha(size: Size) -> bytes:
    out = io.BytesIO()
    _noise(size, "RGBA").save(out, "AVIF", quality=50, speed=10, subsampling="4:4:4")
    return out.getvalue()


def heic(size: Size) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "HEIF", quality=50)
    return out.getvalue()


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Size], bytes]
    content_type: str


CASES = (
    Case("grey+alpha PNG", grey_alpha, "image/png"),
    Case("16-bit grey PNG", grey16, "image/png"),
    Case("16-bit RGBA PNG", rgba16, "image/png"),
    Case("RGBA PNG", rgba, "image/png"),
    Case("palette PNG", palette, "image/png"),
    Case("CMYK JPEG", cmyk, "image/jpeg"),
    Case("lossless WebP", lossless_webp, "image/webp"),
    Case("lossy WebP with alpha", lossy_alpha_webp, "image/webp"),
    Case("animated WebP", animated_webp, "image/webp"),
    Case("4:4:4 AVIF with alpha", avif_alpha, "image/avif"),
    Case("HEIC", heic, "image/heic"),
)


def measure(data: bytes, content_type: str, max_pixels: int) -> int:
    """The peak, in bytes, rendering `data` adds to a fresh process."""
    with tempfile.NamedTemporaryFile(suffix=".img") as f:
        f.write(data)
        f.flush()
        child = [sys.executable, "-m", "bench.memory", "--child", f.name, content_type]
        out = subprocess.run(  # noqa: S603 - our own arguments
            [*child, str(max_pixels)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    peak: int = json.loads(out)["peak"]
    return peak


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(path: str, content_type: str, max_pixels: int) -> None:
    from services.thumbnail_worker.render import render

    configure_pillow()
    data = Path(path).read_bytes()
    before = _status_kb("VmRSS")
    render(data, content_type, DEFAULT_RENDITIONS, max_pixels=max_pixels)
    # VmHWM, not ru_maxrss: the latter carries the parent's high-water over fork and exec.
    high = _status_kb("VmHWM")
    print(json.dumps({"peak": max(0, high - before)}))


def main() -> None:
    from shared.settings import Settings

    configure_pillow()
    settings = Settings()
    side = settings.max_image_side
    size = (side, settings.max_image_pixels // side)
    largest = max(spec.longest_side for spec in DEFAULT_RENDITIONS)
    budget = (settings.render_memory_mb or default_render_memory_mb()) * MB
    worst, worst_name, over, refused = 0, "", [], []
    for case in CASES:
        data = case.make(size)
        need = estimate(data, case.content_type, largest)
        if need > budget:
            # The worker rejects it (too_many_pixels) rather than render it.
            refused.append(f"{case.name} ({need // MB} MB)")
            continue
        peak = measure(data, case.content_type, settings.max_image_pixels)
        if peak > need:
            over.append(f"{case.name} ({peak // MB} MB > {need // MB} MB)")
        if peak > worst:
            worst, worst_name = peak, case.name
    print(
        f"render memory: worst case {worst // MB} MB at the pixel limit ({worst_name}), "
        f"budget {budget // MB} MB"
    )
    if refused:
        print(f"render memory: over the budget, refused: {', '.join(refused)}", file=sys.stderr)
    if over:
        print(f"render memory: peak above the estimate for {', '.join(over)}", file=sys.stderr)
    if over or worst > budget:
        raise SystemExit(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
