"""Benchmark: thread pool or process pool for render(), on a batch of 12 MP JPEGs.

    python -m bench.throughput [--batch N] [--rounds N]

Each pool runs in a fresh child process (its own peak RSS), rounds interleaved so that
other load on the machine lands on every mode alike. Pools are warmed up before timing:
a worker process is started once, not per photo.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.photos import encoded, photo
from services.thumbnail_worker.render import DEFAULT_RENDITIONS, render
from shared.imaging import configure_pillow

MODES = ("serial", "threads", "processes")
WORKERS = 2
DISTINCT = 4  # different photos in the batch, cycled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], Path(args.child[1]), args.batch)))
        return
    with tempfile.TemporaryDirectory(prefix="darkroom-throughput-") as tmp:
        for seed in range(DISTINCT):
            (Path(tmp) / f"{seed}.jpg").write_bytes(encoded(photo(4000, 3000, seed=seed), "JPEG"))
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                runs[mode].append(_spawn(mode, tmp, args.batch))
    _report(runs, args.batch)


def _spawn(mode: str, tmp: str, batch: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.throughput", "--batch", str(batch), "--child", mode, tmp]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)  # noqa: S603
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _child(mode: str, tmp: Path, batch: int) -> dict[str, Any]:
    configure_pillow()
    photos = [path.read_bytes() for path in sorted(tmp.glob("*.jpg"))]
    batch_data = [photos[i % len(photos)] for i in range(batch)]
    with _pool(mode) as pool:
        list(pool.map(_render_one, photos[:WORKERS]))  # warm-up: start the workers
        start = time.perf_counter()
        peaks = list(pool.map(_render_one, batch_data))
        seconds = time.perf_counter() - start
    by_process: dict[int, float] = {}
    for pid, peak in peaks:
        by_process[pid] = max(peak, by_process.get(pid, 0.0))
    workers_mb = sum(by_process.values()) if mode == "processes" else 0.0
    return {"seconds": seconds, "rss_mb": _peak_rss_mb() + workers_mb}


def _pool(mode: str) -> Executor:
    if mode == "processes":
        # spawn, not fork: the worker is an asyncio process with threads of its own.
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(WORKERS, mp_context=context, initializer=configure_pillow)
    return ThreadPoolExecutor(WORKERS if mode == "threads" else 1)


def _render_one(data: bytes) -> tuple[int, float]:
    render(data, "image/jpeg", DEFAULT_RENDITIONS, max_pixels=40_000_000)
    return os.getpid(), _peak_rss_mb()


def _peak_rss_mb() -> float:
    """High-water RSS of this process (getrusage would inherit the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _report(runs: dict[str, list[dict[str, Any]]], batch: int) -> None:
    serial = statistics.median(r["seconds"] for r in runs["serial"])
    print(f"render() throughput: {batch} 12 MP JPEGs, default renditions, median of rounds")
    print(f"{'pool':<10} {'workers':>7} {'img/s':>7} {'speed-up':>9} {'peak RSS MB':>12}")
    for mode in MODES:
        seconds = statistics.median(r["seconds"] for r in runs[mode])
        rss = max(r["rss_mb"] for r in runs[mode])  # processes: pool + workers together
        workers = 1 if mode == "serial" else WORKERS
        print(
            f"{mode:<10} {workers:>7} {batch / seconds:>7.2f} {serial / seconds:>8.2f}x "
            f"{rss:>12.0f}"
        )


if __name__ == "__main__":
    main()
