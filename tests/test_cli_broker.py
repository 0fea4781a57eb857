"""The operator's broker commands say what is wrong in one line."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from services.cli import main
from tests.harness import free_port


@pytest.fixture(autouse=True)
def library_log_levels() -> Iterator[None]:
    """The command quiets aiormq's own connect errors for the process; a test is not one."""
    logger = logging.getLogger("aiormq.connection")
    level = logger.level
    yield
    logger.setLevel(level)


def test_dlq_list_against_an_unreachable_broker_prints_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("DARKROOM_BROKER_URL", f"amqp://admin:s3cret@127.0.0.1:{port}/")
    with pytest.raises(SystemExit) as exit_:
        main(["dlq", "list"])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(
        f"darkroom: cannot reach the broker at amqp://admin:***@127.0.0.1:{port}/"
    )
    assert "s3cret" not in err


def test_broker_declare_needs_a_broker_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DARKROOM_BROKER_URL", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["broker", "declare"])
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "DARKROOM_BROKER_URL" in line
