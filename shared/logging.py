"""structlog set-up: JSON off a terminal, readable on one; context (photo id, trace id) via
contextvars so it follows a message or a request through every log line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

from shared.settings import Settings

# Keys never written to a log line, whatever a caller binds.
_REDACTED = frozenset({"authorization", "token", "secret", "password", "signature"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event.keys() & _REDACTED:
        event[key] = "[redacted]"
    return event


def configure_logging(settings: Settings) -> None:
    as_json = settings.log_json if settings.log_json is not None else not sys.stderr.isatty()
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        # Tracebacks without local variables: a local may hold a token or a key.
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the stdlib; keep their warnings, drop their chatter.
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


@contextmanager
def log_context(**values: object) -> Iterator[None]:
    """Bind values (photo_id, trace_id, ...) to every log line inside the block."""
    with structlog.contextvars.bound_contextvars(**values):
        yield
