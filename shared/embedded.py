"""The embedded S3/SQS stand-in: moto's server, in this process, over real HTTP.

Used by `darkroom dev` and the tests. The bucket announces every created object to an SQS
queue, as AWS S3 would, so the ingest worker's SQS route is the one exercised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from aiobotocore.session import get_session

from shared.errors import ConfigurationError
from shared.keys import ORIGINALS
from shared.settings import Settings
from shared.storage import client_kwargs, sqs_client_kwargs


@contextmanager
def moto_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Start moto's server in a thread; yields its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise ConfigurationError(
            "the embedded S3 stand-in needs moto: pip install 'darkroom[embedded]' "
            "(make install does this), or set DARKROOM_S3_ENDPOINT_URL"
        ) from exc
    # One access-log line per S3 call drowns the pipeline's own logs.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        bound_host, bound_port = server.get_host_and_port()
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.stop()


async def provision_bucket_with_sqs(
    settings: Settings,
    queue_name: str,
    fill: Callable[[], Awaitable[object]] | None = None,
) -> str:
    """Create the bucket and an SQS queue receiving its ObjectCreated events under
    `originals/`, as docs/operations.md has operators set it up; returns the queue URL.
    `fill` runs once the bucket exists and before it announces anything (dev mode puts
    back the objects of its last run). (Dev and tests only: production buckets and
    queues belong to operators.)"""
    session = get_session()
    s3_kwargs = client_kwargs(settings, settings.s3_endpoint_url)
    sqs_kwargs = sqs_client_kwargs(settings, settings.sqs_endpoint_url or settings.s3_endpoint_url)
    async with (
        session.create_client("s3", **s3_kwargs) as s3,
        session.create_client("sqs", **sqs_kwargs) as sqs,
    ):
        await s3.create_bucket(Bucket=settings.s3_bucket)
        if fill is not None:
            await fill()
        queue_url: str = (await sqs.create_queue(QueueName=queue_name))["QueueUrl"]
        attrs = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        await s3.put_bucket_notification_configuration(
            Bucket=settings.s3_bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": attrs["Attributes"]["QueueArn"],
                        "Events": ["s3:ObjectCreated:*"],
                        # Without it, each photo's renditions were announced too: three
                        # notifications a photo for the bridge and the ingest worker to
                        # pass on and drop (bench.pipeline: 145 SQS messages for 48).
                        "Filter": {
                            "Key": {"FilterRules": [{"Name": "prefix", "Value": ORIGINALS}]}
                        },
                    }
                ]
            },
        )
        return queue_url


async def allow_browsers(settings: Settings, origins: list[str]) -> None:
    """The bucket CORS rule docs/clients.md gives: pages on `origins` may upload (a form
    POST, a PUT, parts) and read each part's ETag, which completing a multipart upload
    needs. (Dev and tests only, like the bucket itself.)"""
    session = get_session()
    async with session.create_client(
        "s3", **client_kwargs(settings, settings.s3_endpoint_url)
    ) as s3:
        await s3.put_bucket_cors(
            Bucket=settings.s3_bucket,
            CORSConfiguration={
                "CORSRules": [
                    {
                        "AllowedOrigins": origins,
                        "AllowedMethods": ["GET", "HEAD", "PUT", "POST"],
                        "AllowedHeaders": ["*"],
                        "ExposeHeaders": ["ETag"],
                        "MaxAgeSeconds": 600,
                    }
                ]
            },
        )
