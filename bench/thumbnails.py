"""Benchmark: the worker's render() against naive Pillow and libvips, for the default set.

    python -m bench.thumbnails [--rounds N] [--reps N]

Each (image, method) case runs in `rounds` fresh child processes of `reps` timed renders
after one warm-up, so its peak RSS (VmHWM) is its own; the median is over all timed
renders. The last line sums it up: how much faster than naive Pillow, how near pyvips,
and the peak RSS of a 24 MP render.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from bench.photos import encoded, photo
from services.thumbnail_worker.render import DEFAULT_RENDITIONS, RenditionSpec, render
from shared.imaging import configure_pillow

CASES = (  # label, file name, content type, width, height, Pillow format
    ("12MP jpeg", "12mp.jpg", "image/jpeg", 4000, 3000, "JPEG"),
    ("24MP jpeg", "24mp.jpg", "image/jpeg", 6000, 4000, "JPEG"),
    ("12MP png", "12mp.png", "image/png", 4000, 3000, "PNG"),
)
METHODS = ("render", "naive", "pyvips")
MAX_PIXELS = 40_000_000
Case = tuple[str, str]  # image label, method
_VIPS_SUFFIX = {"JPEG": ".jpg", "WEBP": ".webp", "PNG": ".png"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per case")
    parser.add_argument("--reps", type=int, default=3, help="timed renders per process")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "PATH", "CONTENT_TYPE"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child, reps=args.reps)))
        return
    with tempfile.TemporaryDirectory(prefix="darkroom-bench-") as tmp:
        paths = _write_images(Path(tmp))
        results = _run_all(paths, args.rounds, args.reps)
    _report(results)


def _write_images(tmp: Path) -> dict[str, Path]:
    paths = {}
    for label, name, _, width, height, fmt in CASES:
        paths[label] = tmp / name
        paths[label].write_bytes(encoded(photo(width, height), fmt))
        print(f"{label}: {paths[label].stat().st_size / 1e6:.1f} MB", file=sys.stderr)
    return paths


def _run_all(paths: dict[str, Path], rounds: int, reps: int) -> dict[Case, dict[str, Any]]:
    """Round-robin over the methods, so that noise from other load on the machine lands
    on all of them alike."""
    runs: dict[Case, list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for label, _, content_type, *_ in CASES:
            for method in METHODS:
                run = _spawn(method, paths[label], content_type, reps)
                runs.setdefault((label, method), []).append(run)
    return {case: _merge(case_runs) for case, case_runs in runs.items()}


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    return {
        "median_ms": statistics.median(t for run in runs for t in run["times_ms"]),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
        "base_rss_mb": min(run["base_rss_mb"] for run in runs),
        "sizes": runs[0]["sizes"],
    }


def _spawn(method: str, path: Path, content_type: str, reps: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.thumbnails",
        "--reps",
        str(reps),
        "--child",
        method,
        str(path),
    ]
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [*cmd, content_type], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1]}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _child(method: str, path: str, content_type: str, *, reps: int) -> dict[str, Any]:
    data = Path(path).read_bytes()
    job = _job(method, content_type)
    base_rss = _peak_rss_mb()
    sizes = job(data)  # warm-up: imports, codec initialisation
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        job(data)
        times.append((time.perf_counter() - start) * 1000)
    return {
        "times_ms": times,
        "peak_rss_mb": _peak_rss_mb(),
        "base_rss_mb": base_rss,
        "sizes": sizes,
    }


def _job(method: str, content_type: str) -> Callable[[bytes], list[int]]:
    specs = DEFAULT_RENDITIONS
    if method == "render":
        configure_pillow()
        return lambda data: [
            len(r.data) for r in render(data, content_type, specs, max_pixels=MAX_PIXELS).renditions
        ]
    if method == "naive":
        return lambda data: [len(_naive(data, spec)) for spec in specs]
    vips = importlib.import_module("pyvips")
    vips.cache_set_max(0)  # the same buffer again must not come from libvips' cache
    return lambda data: [len(_vips(vips, data, spec)) for spec in specs]


def _naive(data: bytes, spec: RenditionSpec) -> bytes:
    """Open, full decode, LANCZOS resize, save: what a first version would do."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        upright = ImageOps.exif_transpose(img).convert("RGB")
    scale = min(1.0, spec.longest_side / max(upright.size))
    size = (round(upright.width * scale), round(upright.height * scale))
    out = io.BytesIO()
    upright.resize(size, Image.Resampling.LANCZOS).save(out, spec.format, quality=spec.quality)
    return out.getvalue()


def _vips(vips: Any, data: bytes, spec: RenditionSpec) -> bytes:
    """libvips' thumbnail (shrink-on-load, autorotate, to sRGB), once per rendition, with
    the same encoder settings render() uses."""
    side = spec.longest_side
    thumb = vips.Image.thumbnail_buffer(data, side, height=side, size="down")
    options: dict[str, Any] = {"Q": spec.quality, "keep": 0}  # keep=0: no metadata
    if spec.format == "JPEG":
        options["optimize_coding"] = True
    elif spec.format == "WEBP":
        options["effort"] = 4
    result: bytes = thumb.write_to_buffer(_VIPS_SUFFIX[spec.format], **options)
    return result


def _peak_rss_mb() -> float:
    """This process's high-water RSS. Not getrusage(): Linux carries ru_maxrss over from
    the parent across fork and exec, and the parent held the decoded test images."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _report(results: dict[Case, dict[str, Any]]) -> None:
    print(
        f"{'image':<10} {'method':<7} {'median ms':>10} {'peak RSS MB':>12} "
        f"{'idle RSS MB':>12}  rendition bytes"
    )
    for label, *_ in CASES:
        for method in METHODS:
            r = results[label, method]
            if "error" in r:
                print(f"{label:<10} {method:<7} failed: {r['error']}")
                continue
            print(
                f"{label:<10} {method:<7} {r['median_ms']:>10.1f} {r['peak_rss_mb']:>12.0f} "
                f"{r['base_rss_mb']:>12.0f}  {r['sizes']}"
            )
    print(_summary(results))


def _summary(results: dict[Case, dict[str, Any]]) -> str:
    ours = results["12MP jpeg", "render"]["median_ms"]
    naive = results["12MP jpeg", "naive"]["median_ms"]
    vips = results["12MP jpeg", "pyvips"].get("median_ms", float("nan"))
    rss = results["24MP jpeg", "render"]["peak_rss_mb"]
    return (
        f"thumbnails: 12MP jpeg {naive / ours:.2f}x faster than naive Pillow, "
        f"{ours / vips:.2f}x the time of pyvips; peak RSS 24MP {rss:.0f} MB"
    )


if __name__ == "__main__":
    main()
