"""Benchmark: CPU per render() by image size, for the capacity table.

    python -m bench.capacity [--reps N]

CPU time (the calling thread's own), not wall time: it is what a worker core is busy for
per photo, and it moves far less than wall time when other work shares the machine. Each
size is a camera-like JPEG (bench.photos) at 3, 12 and 24 MP, rendered to the default
renditions, median of the repetitions after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.photos import encoded, photo
from services.thumbnail_worker.render import DEFAULT_RENDITIONS, render
from shared.imaging import configure_pillow
from shared.settings import Settings

SIZES = {"3 MP": (2000, 1500), "12 MP": (4000, 3000), "24 MP": (6000, 4000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=8)
    args = parser.parse_args()
    configure_pillow()
    pixels = Settings().max_image_pixels
    for label, (width, height) in SIZES.items():
        data = encoded(photo(width, height), "JPEG")
        render(data, "image/jpeg", DEFAULT_RENDITIONS, max_pixels=pixels)  # warm up
        spent = []
        for _ in range(args.reps):
            started = time.thread_time()
            render(data, "image/jpeg", DEFAULT_RENDITIONS, max_pixels=pixels)
            spent.append(time.thread_time() - started)
        cpu_ms = statistics.median(spent) * 1000
        print(
            f"render {label} JPEG ({len(data) / 1e6:.1f} MB): {cpu_ms:.0f} ms CPU, "
            f"{1000 / cpu_ms:.1f} renders/s per core"
        )


if __name__ == "__main__":
    main()
