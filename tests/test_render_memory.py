"""Rendering memory: the container's limits read from cgroup files, a budget renders share,
a worker that refuses to start with a budget too small for one image, and real peaks
measured against the estimates renders reserve."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from PIL import Image, ImageChops, ImageStat

from bench.memory import CASES, measure
from services.thumbnail_worker import cgroups
from services.thumbnail_worker.handlers import Thumbnails
from services.thumbnail_worker.memory import (
    MB,
    MemoryBudget,
    TooLargeToRender,
    coded_planes_bytes,
    estimate,
)
from services.thumbnail_worker.render import DEFAULT_RENDITIONS, render
from services.thumbnail_worker.service import render_budget, serve
from shared.errors import ConfigurationError
from shared.events import PhotoVerified
from shared.imaging import configure_pillow
from shared.metrics import Metrics
from shared.resources import Resources
from shared.settings import Settings

LARGEST = max(spec.longest_side for spec in DEFAULT_RENDITIONS)


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


# --- the container's limits ------------------------------------------------------------


def test_cgroup_v2_limits_are_read(tmp_path: Path) -> None:
    root = cgroup(tmp_path, {"memory.max": "536870912", "cpu.max": "150000 100000"})
    assert cgroups.memory_limit(root) == 512 * MB
    assert cgroups.default_render_memory_mb(root) == 256
    assert cgroups.cpu_limit(root) == 1.5
    assert cgroups.available_cpus(root) <= 2


def test_cgroup_v2_without_limits_means_the_defaults(tmp_path: Path) -> None:
    root = cgroup(tmp_path, {"memory.max": "max", "cpu.max": "max 100000"})
    assert cgroups.memory_limit(root) is None
    assert cgroups.default_render_memory_mb(root) == 1024
    assert cgroups.cpu_limit(root) is None


def test_cgroup_v1_limits_are_read(tmp_path: Path) -> None:
    root = cgroup(
        tmp_path,
        {
            "memory/memory.limit_in_bytes": "1073741824",
            "cpu,cpuacct/cpu.cfs_quota_us": "100000",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
        },
    )
    assert cgroups.memory_limit(root) == 1024 * MB
    assert cgroups.default_render_memory_mb(root) == 512
    assert cgroups.cpu_limit(root) == 1.0
    assert cgroups.available_cpus(root) == 1


def test_cgroup_v1_without_limits_means_the_defaults(tmp_path: Path) -> None:
    root = cgroup(
        tmp_path,
        {
            "memory/memory.limit_in_bytes": "9223372036854771712",
            "cpu/cpu.cfs_quota_us": "-1",
            "cpu/cpu.cfs_period_us": "100000",
        },
    )
    assert cgroups.memory_limit(root) is None
    assert cgroups.cpu_limit(root) is None
    assert cgroups.default_render_memory_mb(tmp_path / "nothing-here") == 1024


# --- start-up ---------------------------------------------------------------------------


def test_a_budget_too_small_for_one_image_at_the_pixel_limit_is_refused(
    tmp_path: Path,
) -> None:
    settings = Settings(render_memory_mb=100)
    with pytest.raises(ConfigurationError) as refused:
        render_budget(settings, DEFAULT_RENDITIONS)
    message = str(refused.value)
    assert "100 MB" in message and "DARKROOM_RENDER_MEMORY_MB" in message
    assert "pixel limit" in message
    # The default follows the container: half of a 256 MiB limit is too little too.
    small = cgroup(tmp_path, {"memory.max": str(256 * MB)})
    with pytest.raises(ConfigurationError, match="the default"):
        render_budget(Settings(), DEFAULT_RENDITIONS, small)
    # Half of 512 MiB fits one 40 MP image.
    roomy = cgroup(tmp_path / "roomy", {"memory.max": str(512 * MB)})
    assert render_budget(Settings(), DEFAULT_RENDITIONS, roomy).total == 256 * MB


async def test_the_thumbnail_worker_refuses_to_start_with_too_small_a_budget(
    settings: Settings,
) -> None:
    with pytest.raises(ConfigurationError, match="cannot fit one image"):
        await serve(settings.model_copy(update={"render_memory_mb": 64}), asyncio.Event())


# --- the budget -------------------------------------------------------------------------


def grey_alpha_png(size: tuple[int, int]) -> bytes:
    gradient = Image.linear_gradient("L").resize(size)
    img = Image.merge("LA", (gradient, gradient.transpose(Image.Transpose.ROTATE_180)))
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=1)
    return out.getvalue()


class OneObject:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def get(self, key: str, *, if_match: str | None = None) -> bytes:
        return self.data


async def four_at_once(data: bytes, budget: MemoryBudget) -> list[int]:
    """Four renders of `data` through the worker's handler, sharing `budget`."""
    configure_pillow()
    res = SimpleNamespace(
        storage=OneObject(data),
        settings=SimpleNamespace(max_image_pixels=10_000_000),
        metrics=Metrics(),
    )
    event = verified_event(len(data))
    with ThreadPoolExecutor(4) as pool:
        thumbnails = Thumbnails(cast(Resources, res), pool, concurrency=4, budget=budget)
        results = await asyncio.gather(*(thumbnails._render(event) for _ in range(4)))
    gauges = {"reserved": 0.0, "budget": float(budget.total)}  # once every render is done
    assert {k: sample(res.metrics, f"darkroom_render_memory_{k}_bytes") for k in gauges} == gauges
    return [r.width for r in results]


def verified_event(size: int) -> PhotoVerified:
    return PhotoVerified(
        photo_id="p",
        owner_id="o",
        object_key="k",
        etag=None,
        content_type="image/png",
        size=size,
        keep_location=False,
    )


def sample(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def _child_four_at_once(path: str, total: int) -> None:
    """In a fresh process: the memory four budgeted renders really took (VmHWM above the
    RSS before), for the parent to compare with the budget."""
    data = Path(path).read_bytes()
    budget = MemoryBudget(total)
    before = _status_bytes("VmRSS")
    widths = asyncio.run(four_at_once(data, budget))
    peak = _status_bytes("VmHWM") - before
    print(json.dumps({"widths": widths, "high_water": budget.high_water, "peak": peak}))


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


async def test_four_concurrent_worst_case_renders_never_reserve_past_the_budget() -> None:
    data = grey_alpha_png((4000, 2500))  # grey and alpha at a 10 MP pixel limit
    need = estimate(data, "image/png", LARGEST)
    budget = MemoryBudget(need * 5 // 2)  # room for two at once, not three
    assert await four_at_once(data, budget) == [4000] * 4
    assert budget.high_water == 2 * need <= budget.total
    assert budget.reserved == 0


@pytest.mark.slow
def test_four_concurrent_worst_case_renders_stay_within_the_budget_measured(
    tmp_path: Path,
) -> None:
    data = grey_alpha_png((4000, 2500))
    need = estimate(data, "image/png", LARGEST)
    total = need * 5 // 2
    (tmp_path / "photo.png").write_bytes(data)
    code = (
        "import sys; from tests.test_render_memory import _child_four_at_once as run; "
        "run(sys.argv[1], int(sys.argv[2]))"
    )
    out = subprocess.run(  # noqa: S603 - our own arguments
        [sys.executable, "-c", code, str(tmp_path / "photo.png"), str(total)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["widths"] == [4000] * 4
    assert report["high_water"] == 2 * need <= total
    assert 0 < report["peak"] <= total, (report["peak"] // MB, total // MB)


async def test_a_render_larger_than_the_whole_budget_is_refused_not_queued() -> None:
    budget = MemoryBudget(100 * MB)
    with pytest.raises(TooLargeToRender, match="more than the render memory budget of 100 MB"):
        async with budget.reserve(101 * MB):
            pass
    assert budget.reserved == 0


def test_grey_and_alpha_reduced_in_bands_matches_a_whole_image_conversion() -> None:
    configure_pillow()
    data = grey_alpha_png((3000, 2000))
    [preview, _] = render(data, "image/png", DEFAULT_RENDITIONS, max_pixels=10**8).renditions
    ours = Image.open(io.BytesIO(preview.data)).convert("RGBA")
    with Image.open(io.BytesIO(data)) as img:
        reference = img.convert("RGBA").resize(ours.size, Image.Resampling.LANCZOS)
    difference = ImageStat.Stat(ImageChops.difference(ours, reference))
    assert max(difference.mean) < 2.0, difference.mean


def test_a_still_webp_scaled_by_libwebp_matches_a_full_decode() -> None:
    configure_pillow()
    source = Image.open(io.BytesIO(grey_alpha_png((3000, 2000)))).convert("RGBA")
    encoded = io.BytesIO()
    source.save(encoded, "WEBP", quality=90)
    [preview, _] = render(
        encoded.getvalue(), "image/webp", DEFAULT_RENDITIONS, max_pixels=10**8
    ).renditions
    ours = Image.open(io.BytesIO(preview.data)).convert("RGBA")
    with Image.open(encoded) as img:
        reference = img.convert("RGBA").resize(ours.size, Image.Resampling.LANCZOS)
    difference = ImageStat.Stat(ImageChops.difference(ours, reference))
    assert max(difference.mean) < 3.0, difference.mean


@pytest.mark.parametrize(
    ("fmt", "mode", "options", "planes"),
    [
        ("AVIF", "RGB", {}, 1.5),
        ("AVIF", "RGBA", {"subsampling": "4:4:4"}, 4.0),
        ("HEIF", "RGB", {}, 1.5),
        ("HEIF", "RGBA", {}, 2.5),
    ],
)
def test_avif_and_heif_decoder_planes_are_read_from_their_codec_boxes(
    fmt: str, mode: str, options: dict[str, str], planes: float
) -> None:
    configure_pillow()
    out = io.BytesIO()
    Image.new(mode, (64, 48)).save(out, fmt, **options)
    assert coded_planes_bytes(out.getvalue()) == planes
    assert coded_planes_bytes(b"no codec box here") == 8.0, "unknown counts as the costliest"


def test_look_alike_codec_boxes_placed_first_cannot_lower_the_avif_estimate() -> None:
    configure_pillow()
    out = io.BytesIO()
    Image.new("RGBA", (64, 48)).save(out, "AVIF", subsampling="4:4:4")
    real = out.getvalue()
    # Four cheap look-alikes (8-bit monochrome flags) ahead of the real boxes.
    decoys = (b"av1C" + bytes([0x81, 0x00, 0x10, 0x00])) * 4
    crafted = real[:8] + decoys + real[8:]
    assert coded_planes_bytes(crafted) >= coded_planes_bytes(real) == 4.0


# --- measured peaks ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_measured_peak_of_a_worst_case_render_stays_under_its_estimate(case: Any) -> None:
    configure_pillow()
    data = case.make((5000, 2000))  # 10 MP at a 5000 px side
    peak = measure(data, case.content_type, max_pixels=10_000_000)
    assert 0 < peak <= estimate(data, case.content_type, LARGEST)


async def test_a_large_render_is_not_starved_by_small_ones_arriving_after_it() -> None:
    budget = MemoryBudget(100)
    order: list[str] = []

    async def render(name: str, amount: int, hold: asyncio.Event) -> None:
        async with budget.reserve(amount):
            order.append(name)
            await hold.wait()

    first_done, rest_done = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(render("small-1", 60, first_done))
    await asyncio.sleep(0)
    large = asyncio.create_task(render("large", 100, rest_done))
    await asyncio.sleep(0)
    later = asyncio.create_task(render("small-2", 30, rest_done))  # would fit beside small-1
    await asyncio.sleep(0)
    assert order == ["small-1"], "small-2 waits behind the large render that came first"
    first_done.set()
    await first
    rest_done.set()
    await asyncio.gather(large, later)
    assert order == ["small-1", "large", "small-2"]
    assert budget.reserved == 0


async def test_a_render_whose_handler_gave_up_keeps_its_memory_until_its_thread_ends() -> None:
    budget = MemoryBudget(256 * MB)
    pool = ThreadPoolExecutor(1)
    thread_may_end = threading.Event()
    res = SimpleNamespace(
        storage=OneObject(b"x" * 10),
        settings=SimpleNamespace(max_image_pixels=10_000_000),
        metrics=Metrics(),
    )
    thumbnails = Thumbnails(cast(Resources, res), pool, concurrency=1, budget=budget)
    loop = asyncio.get_running_loop()
    started, released = asyncio.Event(), asyncio.Event()
    budget.on_change = lambda reserved: released.set() if reserved == 0 else None

    def decoding() -> None:
        loop.call_soon_threadsafe(started.set)
        thread_may_end.wait(10)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("services.thumbnail_worker.handlers.estimate", lambda *_: 200 * MB)
        patch.setattr("services.thumbnail_worker.handlers.render", lambda *_, **__: decoding())
        handler = asyncio.create_task(thumbnails._render(verified_event(10)))
        await started.wait()
        handler.cancel()  # the handler's time limit
        with pytest.raises(asyncio.CancelledError):
            await handler
    assert budget.reserved == 200 * MB, "the thread still decodes: its memory stays counted"
    released.clear()
    thread_may_end.set()
    await asyncio.wait_for(released.wait(), 10)  # once the thread is done
    assert budget.reserved == 0
    pool.shutdown(wait=True)
