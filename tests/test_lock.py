"""requirements.lock, which `make install` installs from, pins every dependency that
pyproject.toml names, at a version its range allows: a dependency added or re-ranged
without `make lock` fails here, not on a fresh clone."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = {
    "requirements.lock": ("embedded", "dev"),
    "requirements-runtime.lock": (),
}


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    return {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.M)
    }


def required(extras: tuple[str, ...]) -> list[Requirement]:
    named = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        named += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return [r for r in named if canonicalize_name(r.name) != "darkroom"]


@pytest.mark.parametrize(("lock", "extras"), LOCKS.items(), ids=LOCKS.keys())
def test_the_lock_pins_every_dependency_within_its_range(
    lock: str, extras: tuple[str, ...]
) -> None:
    pinned = pins(lock)
    for requirement in required(extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in {lock}: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside {requirement.specifier}: run `make lock`"
        )


def test_every_range_has_an_upper_bound() -> None:
    every = required(("embedded", "dev", *PROJECT["optional-dependencies"]))
    open_ended = [
        str(r) for r in every if not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)
    ]
    assert open_ended == []


def test_both_locks_agree_on_shared_versions() -> None:
    full, runtime = pins("requirements.lock"), pins("requirements-runtime.lock")
    assert {n: v for n, v in runtime.items() if full.get(n) != v} == {}
