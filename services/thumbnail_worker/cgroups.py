"""The container's memory and CPU limits, from cgroup v2 or v1 files.

os.cpu_count() and the machine's memory describe the node, not the container: a pod
limited to 512Mi on a 64-core node must not start 64 renders.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as a page-rounded huge number (9223372036854771712).
_UNLIMITED = 1 << 62


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def memory_limit(root: Path = ROOT) -> int | None:
    """The container's memory limit in bytes, or None without one."""
    v2 = _read(root / "memory.max")
    if v2 is not None:
        return None if v2 == "max" else _positive(v2)
    for path in (root / "memory" / "memory.limit_in_bytes", root / "memory.limit_in_bytes"):
        v1 = _read(path)
        if v1 is not None:
            value = _positive(v1)
            return value if value is not None and value < _UNLIMITED else None
    return None


def cpu_limit(root: Path = ROOT) -> float | None:
    """The container's CPU quota in cores, or None without one."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            return _ratio(parts[0], parts[1])
        return None
    for base in (root / "cpu", root / "cpu,cpuacct", root):
        quota = _read(base / "cpu.cfs_quota_us")
        period = _read(base / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return _ratio(quota, period)
    return None


def available_cpus(root: Path = ROOT) -> int:
    """Cores this process may use: the CPU quota rounded up, within the CPUs it may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cpu_limit(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def default_render_memory_mb(root: Path = ROOT) -> int:
    """Half the container's memory limit (the rest is the process itself, the original
    bytes in flight and headroom), or 1024 MB without a limit."""
    limit = memory_limit(root)
    return 1024 if limit is None else max(1, limit // 2 // (1 << 20))


def _positive(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _ratio(quota: str, period: str) -> float | None:
    q, p = _positive(quota), _positive(period)
    return None if q is None or p is None else q / p
