"""One upload is one trace, from the grant's request to the webhook; log lines name it.

The whole pipeline runs on embedded parts (`darkroom dev`: in-process broker, SQLite,
moto) with spans kept in memory.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import aiohttp
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from services.dev import run_dev
from services.gateway.auth import issue_token
from shared.logging import configure_logging, get_logger
from shared.settings import Settings
from shared.store import open_store
from shared.tracing import setup_tracing, tracer
from tests import images
from tests.conftest import JWT_SECRET
from tests.harness import WEBHOOK_SECRET, Client, WebhookReceiver, free_port, running


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = setup_tracing("darkroom-test", processor=SimpleSpanProcessor(exporter))
    assert tracing is not None
    try:
        yield exporter
    finally:
        tracing.close()
        # Back to the no-op provider, so other tests run untraced as by default, and
        # unbind Darkroom's tracer from the provider just shut down (a process installs
        # one provider for its life; tests install one each).
        trace._TRACER_PROVIDER_SET_ONCE._done = False
        trace._TRACER_PROVIDER = None
        if isinstance(tracer, trace.ProxyTracer):
            tracer._real_tracer = None


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def webhook(span: ReadableSpan) -> bool:
    attributes = span.attributes or {}
    return "/hook" in str(attributes.get("url.full", attributes.get("http.url", "")))


def trace_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return trace.format_trace_id(span.context.trace_id)


async def test_one_upload_is_one_trace_from_grant_to_webhook(
    spans: InMemorySpanExporter, settings: Settings, hooks: WebhookReceiver
) -> None:
    await upload_is_one_trace(spans, settings, hooks)


async def test_one_upload_is_one_trace_across_real_rabbitmq(
    spans: InMemorySpanExporter, rabbit_settings: Settings, hooks: WebhookReceiver
) -> None:
    """The same, with aio-pika's instrumentation and headers crossing a real broker."""
    finished = await upload_is_one_trace(spans, rabbit_settings, hooks)
    [grant] = named(finished, "upload granted")
    [hint] = [s for s in finished if s.name.endswith("upload.completed send")]
    pika = [
        s
        for s in finished
        if s.instrumentation_scope and "aio_pika" in s.instrumentation_scope.name
    ]
    in_photo_trace = [s for s in pika if trace_of(s) == trace_of(grant)]
    # photo.verified, photo.ready and the webhook delivery it fans out to are sent and
    # received within the photo's trace; only the completion hint belongs to the request
    # that sent it.
    sent = [s.name.split(",")[-1] for s in in_photo_trace if s.kind is trace.SpanKind.PRODUCER]
    assert sorted(sent) == ["photo.ready send", "photo.verified send", "webhook.delivery send"]
    # Received: photo.verified (thumbnail), photo.ready (notifier, and the gateway's live
    # events queue) and the webhook delivery.
    assert len([s for s in in_photo_trace if s.kind is trace.SpanKind.CONSUMER]) == 4
    assert {trace_of(s) for s in pika} == {trace_of(grant), trace_of(hint)}


async def upload_is_one_trace(
    spans: InMemorySpanExporter, settings: Settings, hooks: WebhookReceiver
) -> list[ReadableSpan]:
    settings = settings.model_copy(
        update={
            "webhook_url": hooks.url,
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            "gateway_port": free_port(),
        }
    )
    photo = images.jpeg(640, 480)
    async with running(settings, [run_dev]) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "alice"))
        async with http.post(
            f"{base}/v1/uploads",
            json={"filename": "a.jpg", "content_type": "image/jpeg", "size": len(photo)},
            headers=client.headers,
        ) as resp:
            assert resp.status == 201
            request_id = resp.headers["X-Request-ID"]
            grant = await resp.json()
        photo_id = grant["photo_id"]
        await client.upload(grant, photo, "image/jpeg")
        # A separate request with a trace of its own: the photo's trace still continues.
        async with http.post(
            f"{base}/v1/uploads/{photo_id}/complete", headers=client.headers
        ) as resp:
            assert resp.status == 202
        await hooks.wait_for(photo_id, "photo.ready")
    async with open_store(settings) as store:
        record = await store.get(photo_id)
    assert record is not None

    finished = list(spans.get_finished_spans())
    [grant_span] = [
        s
        for s in finished
        if s.kind is trace.SpanKind.SERVER
        and (s.attributes or {}).get("http.route") == "/v1/uploads"
    ]
    upload_trace = trace_of(grant_span)
    assert record.trace_id == upload_trace == request_id
    [anchor] = named(finished, "upload granted")
    [verify] = named(finished, "verify")
    assert verify.parent is not None and anchor.context is not None
    assert verify.parent.span_id == anchor.context.span_id
    the_rest = [
        *named(finished, "render"),
        *named(finished, "photo.verified"),  # the thumbnail worker's handling
        *named(finished, "photo.ready"),  # the notifier's
        *named(finished, "photo.ready publish"),
        *named(finished, "S3.put_object"),
        *[s for s in finished if s.kind is trace.SpanKind.CLIENT and webhook(s)],
    ]
    assert {s.name for s in the_rest} >= {
        "render",
        "photo.verified",
        "photo.ready",
        "photo.ready publish",
        "S3.put_object",
        "POST",
    }
    assert {trace_of(s) for s in [anchor, verify, *the_rest]} == {upload_trace}
    return finished


def test_log_lines_carry_the_span_and_service_and_library_lines_are_json(
    spans: InMemorySpanExporter, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(settings.model_copy(update={"log_json": True}), "thumbnail-worker")
    try:
        with tracer.start_as_current_span("work") as span:
            get_logger("tests").info("inside a span")
            logging.getLogger("aiormq.connection").warning("library says %s", "hello")
    finally:
        structlog.reset_defaults()
        root.handlers, root.level = saved[0], saved[1]
    lines = [json.loads(line) for line in err.getvalue().splitlines()]
    [ours] = [line for line in lines if line["event"] == "inside a span"]
    [library] = [line for line in lines if line["event"] == "library says hello"]
    context = span.get_span_context()
    for line in (ours, library):
        assert line["service"] == "thumbnail-worker"
        assert line["trace_id"] == trace.format_trace_id(context.trace_id)
        assert line["span_id"] == trace.format_span_id(context.span_id)
    assert library["level"] == "warning"
    assert library["logger"] == "aiormq.connection"
