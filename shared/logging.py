"""structlog set-up: JSON off a terminal, readable on one; context (photo id, trace id) via
contextvars so it follows a message or a request through every log line. Every line names
its `service`, and, inside a span, carries the span's `trace_id` and `span_id`. Libraries'
stdlib log records go through the same processors and renderer."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from types import MappingProxyType, TracebackType
from typing import Any

import structlog
from pydantic_core import PydanticSerializationError, to_json

from shared.settings import Settings
from shared.tracing import current_ids

# Keys never written to a log line, whatever a caller binds.
_REDACTED = frozenset({"authorization", "token", "secret", "password", "signature"})
# What log_context bound, as one mapping: structlog's bound_contextvars keeps a variable
# per key and copies the whole context on entry and exit (47k instructions a block
# against 13k here; a grant enters two).
_bound: ContextVar[Mapping[str, object]] = ContextVar(
    "darkroom_log_context", default=MappingProxyType({})
)


def merge_context(_: Any, __: str, event: MutableMapping[str, Any]) -> Any:
    """The processor adding what the blocks around the call bound (tests capturing
    lines run it too)."""
    for key, value in _bound.get().items():
        event.setdefault(key, value)
    return event


# structlog's method names that are not level names.
_LEVELS = {"warn": "warning", "exception": "error"}


class _Enrich:
    """One processor for what every line gets, in this key order: the bound context,
    `level`, `timestamp`, `service`, the span's ids; then redaction. One call instead of
    six, and the timestamp's date and time formatted once a second (structlog's
    TimeStamper, `datetime.now().isoformat()`, was 4 us a line)."""

    __slots__ = ("_second", "_service")

    def __init__(self, service: str) -> None:
        self._service = service
        self._second = (-1, "")  # one tuple, replaced whole: threads log too

    def __call__(self, _: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        merge_context(_, method, event)
        event["level"] = _LEVELS.get(method, method)
        event["timestamp"] = self._now()
        event.setdefault("service", self._service)
        ids = current_ids()
        if ids is not None:
            event["trace_id"], event["span_id"] = ids
        if not _REDACTED.isdisjoint(event):
            for key in event.keys() & _REDACTED:
                event[key] = "[redacted]"
        return event

    def _now(self) -> str:
        """Now in UTC, as RFC 3339 with microseconds and `Z`."""
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        known, text = self._second
        if second != known:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{nanos // 1000:06d}Z"


def _fallback(value: Any) -> Any:
    structlog_form = getattr(value, "__structlog__", None)
    return structlog_form() if structlog_form is not None else repr(value)


class _Json:
    """The last processor: a line's JSON, by pydantic-core (12k instructions against the
    json module's 39k); by the json module, which escapes what is not ASCII, when that
    line is not ASCII (a line must be whatever the locale of its stream) or cannot be
    made (bytes that are not UTF-8). Both without spaces."""

    __slots__ = ("_ascii",)

    def __init__(self) -> None:
        self._ascii = json.JSONEncoder(default=_fallback, separators=(",", ":"))

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> str:
        if "exc_info" in event:
            event = structlog.processors.format_exc_info(_, __, event)
        try:
            line = to_json(event, fallback=_fallback).decode()
        except PydanticSerializationError:
            line = ""
        return line if line.isascii() and line else self._ascii.encode(event)


def _lean_logger(min_level: int) -> Any:
    """structlog's level-filtering logger, whose `info` (every request's access line)
    runs the processors itself: structlog's way there, three calls that each repack the
    arguments, was 19k of a line's 78k instructions."""
    base: Any = structlog.make_filtering_bound_logger(min_level)
    if min_level > logging.INFO:
        return base

    def info(self: Any, event: str, *args: Any, **kw: Any) -> Any:
        if args:  # %-style arguments: structlog's way
            return base.info(self, event, *args, **kw)
        kw["event"] = event
        line: Any = {**self._context, **kw} if self._context else kw
        try:
            for processor in self._processors:
                line = processor(self._logger, "info", line)
        except structlog.DropEvent:
            return None
        if isinstance(line, tuple):
            return self._logger.info(*line[0], **line[1])
        if isinstance(line, dict):
            return self._logger.info(**line)
        return self._logger.info(line)

    return type("LeanBoundLogger", (base,), {"info": info})


def configure_logging(settings: Settings, service: str = "darkroom") -> None:
    as_json = settings.log_json if settings.log_json is not None else not sys.stderr.isatty()
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    # Each renders an exception first (in JSON as a string, on a terminal without local
    # variables: a local may hold a token or a key).
    render: list[Any] = (
        [_Json()]
        if as_json
        else [
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
        ]
    )
    shared: list[Any] = [_Enrich(service)]
    structlog.configure(
        processors=[*shared, *render],
        wrapper_class=_lean_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the stdlib: the same processors and renderer, so their lines
    # are JSON too; keep their warnings, drop their chatter.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(level, logging.WARNING))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class log_context:
    """Bind values (photo_id, trace_id, ...) to every log line inside the block; values
    bound outside it come back after it."""

    __slots__ = ("_outer", "_values")
    _outer: Mapping[str, object]

    def __init__(self, **values: object) -> None:
        self._values = values

    def __enter__(self) -> None:
        self._outer = _bound.get()
        _bound.set({**self._outer, **self._values})

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Set, not reset(token): a block may end in another context than it began in.
        _bound.set(self._outer)


class log_fields(log_context):
    """A block whose lines carry `fields`, a dict its code may add to: what is added shows
    on every later line in the block (a request's owner, once known, without a second
    block for it: 11k instructions each)."""

    __slots__ = ()

    def __init__(self, fields: dict[str, object]) -> None:
        self._values = fields

    def __enter__(self) -> None:
        self._outer = _bound.get()
        for key, value in self._outer.items():
            self._values.setdefault(key, value)
        _bound.set(self._values)
