"""The gateway's fast way to an info line (shared/logging.py `_lean_logger`, which reads
structlog's bound-logger fields) writes exactly what structlog's own way writes: this
fails first if a structlog release changes what that code relies on."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from shared.logging import configure_logging, get_logger, log_context
from shared.settings import Settings


@pytest.fixture(autouse=True)
def configured_here_only() -> Iterator[None]:
    """Each test configures logging; later tests get it back as it was."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers, root.level = saved


def logged(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The lines written since the last call, as written but for their timestamps."""
    return [
        re.sub(r'"timestamp":"[^"]+"', '"timestamp":"-"', line)
        for line in capsys.readouterr().err.splitlines()
    ]


def both_ways(name: str) -> tuple[Any, Any]:
    """The configured logger, and one on structlog's own filtering bound logger with the
    same processors and output."""
    plain = structlog.wrap_logger(
        None, wrapper_class=structlog.make_filtering_bound_logger(logging.INFO)
    )
    return get_logger(name), plain


def failing() -> None:
    raise ValueError("bad input")


@pytest.mark.parametrize(
    "emit",
    [
        pytest.param(lambda log: log.info("grant", owner_id="alice", count=2), id="fields"),
        pytest.param(lambda log: log.bind(photo_id="p1").info("ready"), id="bound"),
        pytest.param(lambda log: log.info("took %d ms", 5), id="percent-style"),
        pytest.param(lambda log: log.info("café", who="zoë"), id="not ascii"),
        pytest.param(lambda log: log.info("login", token="s3cret"), id="redacted"),
    ],
)
def test_an_info_line_is_the_same_either_way(emit: Any, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_json=True, log_level="info"), "gateway")
    fast, plain = both_ways("test")
    with log_context(trace_id="t-1"):
        emit(fast)
        emit(plain)
    first, second = logged(capsys)
    assert first == second
    line = json.loads(first)
    assert line["trace_id"] == "t-1" and line["service"] == "gateway"


def test_an_exception_is_rendered_the_same_either_way(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_json=True, log_level="info"), "gateway")
    fast, plain = both_ways("test")
    for log in (fast, plain):
        try:
            failing()
        except ValueError:
            log.info("failed", exc_info=True)
    first, second = logged(capsys)
    assert first == second and "ValueError: bad input" in json.loads(first)["exception"]


def test_below_the_level_nothing_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_json=True, log_level="warning"), "gateway")
    get_logger("test").info("quiet")
    assert logged(capsys) == []
