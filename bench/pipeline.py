"""Benchmark: stored-to-ready throughput of the whole pipeline against raw render().

    python -m bench.pipeline [--photos N] [--threads T] [--storage moto|seaweedfs]
                             [--profile DIR]

The services run as processes (`python -m services.<name>`) on real RabbitMQ and
PostgreSQL (a database and a topology of the run's own); photos are 12 MP JPEGs uploaded
through Darkroom's own grants, and a photo is ready when its `photo.ready` webhook
arrives. Storage is moto's S3 and SQS in this process (the issue's figures), or with
`--storage seaweedfs` SeaweedFS, an S3 server that is not Python (bench/pipeline_run.py).
In the same run, render() alone on the same photos with the same number of threads gives
the baseline. Then the pipeline runs again with two thumbnail worker processes of T
threads each, for the scale-out ratio. `--profile DIR` runs py-spy on the thumbnail and
ingest workers and on this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.photos import encoded, photo
from bench.pipeline_run import STORAGES, Run, pipeline
from services.thumbnail_worker.render import DEFAULT_RENDITIONS, render
from shared.imaging import configure_pillow
from shared.settings import Settings

DISTINCT = 4


async def main(count: int, threads: int, kind: str, profile: Path | None = None) -> None:
    configure_pillow()
    samples = [encoded(photo(4000, 3000, seed=s), "JPEG") for s in range(DISTINCT)]
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    print(f"storage: {kind}")
    # Raw render() before and after the pipeline runs: other work on the machine moves
    # both, and the ratio is taken against their mean.
    raw_cpu: list[float] = []
    raw_before = _raw_render_rate(samples, count, threads, raw_cpu)
    one = await pipeline(samples, count, threads, thumbnail_workers=1, kind=kind, profile=profile)
    two = await pipeline(samples, count, threads, thumbnail_workers=2, kind=kind, profile=profile)
    raw_after = _raw_render_rate(samples, count, threads, raw_cpu)
    raw = (raw_before + raw_after) / 2
    print(
        f"raw render(): {raw:.2f} photos/s with {threads} threads (12 MP JPEG; "
        f"{raw_before:.2f} before the pipeline runs, {raw_after:.2f} after)"
    )
    print(
        f"pipeline: {one.rate:.2f} photos/s, {one.rate / raw:.2f} of raw render throughput, "
        f"p50 {one.p50:.0f} ms, p99 {one.p99:.0f} ms"
    )
    print(f"scale-out: 2 workers {two.rate / one.rate:.2f}x of 1 ({threads} threads each)")
    for workers, run in ((1, one), (2, two)):
        _report(workers, run, statistics.mean(raw_cpu))
    # What the CPU per photo allows when every process shares this machine's cores:
    # from CPU figures alone, which other work on the machine moves far less than rates.
    cores = len(os.sched_getaffinity(0))
    raw_ms = statistics.mean(raw_cpu)
    one_cap, two_cap = (_ceiling(r, cores, threads * n) for n, r in ((1, one), (2, two)))
    print(
        f"ceiling from CPU per photo on {cores} cores: pipeline {one_cap * raw_ms / 1000:.2f} "
        f"of raw render, scale-out {two_cap / one_cap:.2f}x; steady (first to last ready) "
        f"{one.steady:.2f} and {two.steady:.2f} photos/s, {two.steady / one.steady:.2f}x"
    )


def _ceiling(run: Run, cores: int, render_threads: int) -> float:
    """Photos/s at most: all cores busy, or every render thread busy."""
    rendering = sum(ms for name, ms in run.cpu_ms.items() if name.startswith("thumbnail"))
    return min(cores / sum(run.cpu_ms.values()), render_threads / rendering) * 1000


def _report(workers: int, run: Run, raw_cpu_ms: float) -> None:
    print(
        f"stages, {workers} worker(s), p50: stored->verified {run.ingest_p50:.0f} ms, "
        f"verified->ready {run.render_p50:.0f} ms; first ready after {run.first_ms:.0f} ms"
    )
    print(
        f"CPU per photo, {workers} worker(s): "
        + ", ".join(f"{name} {ms:.0f} ms" for name, ms in run.cpu_ms.items())
        + f"; total {sum(run.cpu_ms.values()):.0f} ms; raw render() {raw_cpu_ms:.0f} ms"
    )
    for name, spy in run.profiles.items():
        print(f"{name} top 10 by own time, {workers} worker(s) (py-spy):")
        for frame, share in spy.top():
            print(f"  {share:5.1f}%  {frame}")
        shares = ", ".join(f"{p} {share:.0f}%" for p, share in spy.packages())
        print(f"  by package, inclusive: {shares}")


def _raw_render_rate(samples: list[bytes], count: int, threads: int, cpu_ms: list[float]) -> float:
    """render() alone, photos/s; appends its CPU per photo to `cpu_ms`."""
    pixels = Settings().max_image_pixels

    def one(data: bytes) -> None:
        render(data, "image/jpeg", DEFAULT_RENDITIONS, max_pixels=pixels)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, samples))  # warm up
        started, cpu = time.perf_counter(), _own_cpu()
        list(pool.map(one, (samples[i % DISTINCT] for i in range(count))))
        cpu_ms.append((_own_cpu() - cpu) * 1000 / count)
        return count / (time.perf_counter() - started)


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--storage", choices=STORAGES, default="moto")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the workers")
    args = parser.parse_args()
    asyncio.run(main(args.photos, args.threads, args.storage, args.profile))
