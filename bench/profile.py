"""py-spy around a benchmark run: the process's top functions by own time.

Collapsed stacks (`py-spy record -f raw`) list one sampled stack per line with its count;
a function's own time is the samples where it is the innermost frame.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Profile:
    def __init__(self, pid: int, out: Path, seconds: float) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        if spy is None:
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        cmd = [spy, "record", "-p", str(pid), "-f", "raw", "-r", "250", "-o", str(out)]
        self._proc = subprocess.Popen(  # noqa: S603
            [*cmd, "-d", str(int(seconds) + 1), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def top(self, n: int = 10) -> list[tuple[str, float]]:
        own: Counter[str] = Counter()
        for stack, count in self._stacks():
            own[_frame(stack[-1])] += count
        total = sum(own.values()) or 1
        return [(name, 100 * c / total) for name, c in own.most_common(n)]

    def packages(self) -> list[tuple[str, float]]:
        """Each package's inclusive share: samples with any of its frames on the stack."""
        inclusive: Counter[str] = Counter()
        total = 0
        for stack, count in self._stacks():
            total += count
            for package in {p for frame in stack for p in PACKAGES if f"({p}" in frame}:
                inclusive[package] += count
        return [(p.strip("/"), 100 * c / (total or 1)) for p, c in inclusive.most_common()]

    def _stacks(self) -> list[tuple[list[str], int]]:
        self._proc.wait()
        stacks = []
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            stacks.append((stack.split(";"), int(count)))
        return stacks


PACKAGES = (
    "sqlalchemy/",
    "asyncpg/",
    "botocore/",
    "aiobotocore/",
    "jwt/",
    "pydantic/",
    "aio_pika/",
    "redis/",
    "structlog/",
)


def _frame(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    module = Path(where.split(":")[0]).name
    return f"{name} ({module})" if module else name
