"""OpenTelemetry traces: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.

One upload is one trace, from the grant's request to the webhook. Messages carry W3C
`traceparent` headers. The one hop no header crosses is storage: the ingest worker learns
of an upload from S3 (or the sweep), not from the gateway. So each granted photo gets an
anchor span whose id is derived from the trace and the photo id; whoever picks the photo
up continues the photo's recorded trace under that anchor, needing nothing stored but
the trace id the record already keeps.

The maintained instrumentations cover the aiohttp server (request spans) and client
(webhook POSTs) and aio-pika. botocore's does not reach aiobotocore's async calls, so S3
calls get their spans from `traced_client`.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import os
import re
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

tracer = trace.get_tracer("darkroom")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_anchor_id: contextvars.ContextVar[int] = contextvars.ContextVar("anchor_id", default=0)
# Probes and scrapes are not worth a trace each.
_EXCLUDED = "healthz,readyz,metrics"


class _AnchoringIds(RandomIdGenerator):
    """Random ids, except the span started inside `anchor()`: it takes the derived id."""

    def generate_span_id(self) -> int:
        chosen = _anchor_id.get()
        if chosen:
            _anchor_id.set(0)
            return chosen
        return super().generate_span_id()


def enabled() -> bool:
    return isinstance(trace.get_tracer_provider(), TracerProvider)


class Tracing:
    """What `setup_tracing` installed."""

    def __init__(self, provider: TracerProvider, instrumentors: list[Any]) -> None:
        self.provider = provider
        self._instrumentors = instrumentors

    def close(self) -> None:
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self.provider.shutdown()


def setup_tracing(service: str, *, processor: SpanProcessor | None = None) -> Tracing | None:
    """Install the tracer provider and the instrumentations, once per process, at its
    entry point. Without OTEL_EXPORTER_OTLP_ENDPOINT (and no `processor`, as tests
    pass) nothing is installed and every span below is a no-op."""
    if processor is None:
        if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            return None
        processor = BatchSpanProcessor(_otlp_exporter())
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)}),
        id_generator=_AnchoringIds(),
    )
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    os.environ.setdefault("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS", _EXCLUDED)
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    instrumentors: list[Any] = [
        AioHttpServerInstrumentor(),
        AioHttpClientInstrumentor(),
        AioPikaInstrumentor(),
    ]
    with warnings.catch_warnings():
        # aiohttp frowns on the server instrumentation's Application subclass; it works.
        warnings.simplefilter("ignore", DeprecationWarning)
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=provider)
    return Tracing(provider, instrumentors)


def _otlp_exporter() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span, as hex, if tracing is on and in one."""
    if not otel_context.get_current():
        return None  # nothing in the context, so no span: 0.15 us instead of 0.45
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)


def inject(headers: MutableMapping[str, Any]) -> None:
    """Add the current span's `traceparent` (and `tracestate`) to message headers."""
    propagate.inject(headers)


def _anchor_span_id(trace_id: str, key: str) -> int:
    digest = hashlib.sha256(f"{trace_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def _anchor_context(trace_id: str, key: str) -> otel_context.Context | None:
    if not _TRACE_ID.match(trace_id):
        return None  # recorded while tracing was off: nothing to continue
    parent = SpanContext(
        int(trace_id, 16),
        _anchor_span_id(trace_id, key),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def anchor(photo_id: str) -> None:
    """Record the photo's anchor span, in the current trace (the grant's request)."""
    ids = current_ids()
    if ids is None:
        return
    _anchor_id.set(_anchor_span_id(ids[0], photo_id))
    with tracer.start_as_current_span("upload granted", attributes={"darkroom.photo_id": photo_id}):
        pass
    _anchor_id.set(0)


@contextmanager
def photo_span(name: str, trace_id: str, photo_id: str, **attributes: Any) -> Iterator[None]:
    """A span in the photo's own trace: a child of the current span when that is already
    the photo's trace (a message from the gateway), else under the photo's anchor, linked
    to whatever led here (a storage notification's trace)."""
    attributes["darkroom.photo_id"] = photo_id
    ids = current_ids()
    if ids is not None and ids[0] == trace_id:
        with tracer.start_as_current_span(name, attributes=attributes):
            yield
        return
    here = trace.get_current_span().get_span_context()
    links = [Link(here)] if here.is_valid else []
    parent = _anchor_context(trace_id, photo_id)
    with tracer.start_as_current_span(name, context=parent, links=links, attributes=attributes):
        yield


@contextmanager
def consume_span(
    queue: str, headers: Mapping[str, Any], trace_id: str = "", photo_id: str = ""
) -> Iterator[None]:
    """The span of handling one message: continues the `traceparent` it carries, or, for
    an event published without one (by the outbox relay), the event's photo's trace."""
    parent = propagate.extract({k: v for k, v in headers.items() if isinstance(v, str)})
    if not trace.get_current_span(parent).get_span_context().is_valid and photo_id:
        parent = _anchor_context(trace_id, photo_id) or parent
    with tracer.start_as_current_span(
        f"{queue} process", context=parent, kind=SpanKind.CONSUMER
    ) as span:
        span.set_attribute("messaging.destination.name", queue)
        yield


def traced_client(client: Any, service: str) -> Any:
    """`client` with a span around each of its API calls (aiobotocore)."""
    return _TracedClient(client, service)


class _TracedClient:
    def __init__(self, client: Any, service: str) -> None:
        self._client = client
        self._service = service

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        # API operations (put_object, ...) are plain methods returning a coroutine.
        if name not in self._client.meta.method_to_api_mapping:
            return attr

        @functools.wraps(attr)
        async def call(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(
                f"{self._service}.{name}",
                kind=SpanKind.CLIENT,
                attributes={
                    "rpc.system": "aws-api",
                    "rpc.service": self._service,
                    "rpc.method": name,
                    "aws.s3.bucket": str(kwargs.get("Bucket", "")),
                },
            ):
                return await attr(*args, **kwargs)

        return call
