"""Every setting Darkroom reads, in one object built from `DARKROOM_*` environment variables.

Build it once in a process entry point (`Settings()`) and pass it down explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.secrets import jwt_secret_problem, webhook_secret_problem
from shared.smtp import sender_problem, smtp_url_problem

ALLOWED_CONTENT_TYPES: tuple[str, ...] = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/heic",
    "image/heif",
    "image/avif",
)

MiB = 1024 * 1024
PositiveInt = Annotated[int, Field(gt=0)]
Seconds = Annotated[float, Field(gt=0)]
MAX_PRESIGNED_TTL = 7 * 86_400
PresignedTtl = Annotated[int, Field(gt=0, le=MAX_PRESIGNED_TTL)]


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_schedule(text: str) -> tuple[int, ...]:
    """ "0,5s,5m" -> (0, 5000, 300000): milliseconds, at least one attempt, none negative."""
    delays = []
    for part in text.split(","):
        item = part.strip().lower()
        unit = next((u for u in ("ms", "s", "m", "h", "d") if item.endswith(u)), "")
        try:
            amount = float(item.removesuffix(unit)) if item else -1.0
        except ValueError:
            amount = -1.0
        if amount < 0:
            raise ValueError(f"{part.strip()!r} is not a delay such as 0, 500ms, 5s, 5m, 2h or 1d")
        delays.append(round(amount * _UNITS_MS[unit or "s"]))
    return tuple(delays)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DARKROOM_", extra="ignore", frozen=True)

    # Where the embedded defaults keep their files (SQLite database, etc.).
    data_dir: Path = Path(".darkroom")

    # Broker. Empty means the in-process broker (single-process `darkroom dev` only).
    broker_url: str = ""
    topology_prefix: str = Field("darkroom", pattern=r"^[a-z0-9][a-z0-9_.-]{0,40}$")
    # Declare exchanges and queues at start-up. Off when a set-up step with broader rights
    # (`darkroom broker declare`) did it and each service's broker user may not configure.
    broker_declare: bool = True
    prefetch: PositiveInt = 16
    publish_timeout: Seconds = 10.0
    delivery_limit: PositiveInt = 20
    retry_max_attempts: PositiveInt = 8
    retry_base_ms: PositiveInt = 1000
    retry_cap_ms: PositiveInt = 60_000
    shutdown_grace: Seconds = 20.0
    handler_timeout: Seconds = 300.0
    outage_hold: Seconds = 600.0
    # The outbox relay re-sends events a crash or outage left unsent for this long.
    outbox_relay_interval: Seconds = 5.0
    outbox_relay_after: Seconds = 10.0

    # Metadata store. Empty means SQLite under data_dir.
    database_url: str = ""
    database_timeout: Seconds = 30.0
    # Bring the schema up to date when a service starts. Turn off to migrate in a separate
    # deploy step (`darkroom migrate`) before the new release rolls out.
    migrate_on_start: bool = True

    # Object storage. An empty endpoint means AWS S3 (or the embedded moto server in dev).
    s3_endpoint_url: str = ""
    # Endpoint that clients can reach, used only for presigned URLs (compose, k8s ingress).
    s3_public_endpoint_url: str = ""
    s3_bucket: str = "darkroom"
    s3_region: str = "us-east-1"
    # Empty: botocore's usual credential chain (environment, instance or pod role, ...).
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    s3_timeout: Seconds = 30.0
    # AWS S3 notifications arrive on SQS; the ingest worker bridges them onto the storage
    # exchange. Empty queue URL: no bridge (MinIO/Ceph publish to RabbitMQ directly).
    sqs_queue_url: str = ""
    sqs_endpoint_url: str = ""
    sqs_wait_seconds: int = Field(20, ge=0, le=20)

    # `darkroom dev`: port of the embedded S3/SQS server (0 = any free port).
    dev_s3_port: int = Field(9100, ge=0, le=65535)
    # `darkroom dev`: port of the SMTP catcher behind /dev/mail, unless smtp_url is set.
    dev_smtp_port: int = Field(9125, ge=0, le=65535)

    # Gateway.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8080, ge=0, le=65535)
    auth_jwt_secret: SecretStr = SecretStr("")
    # Bearer tokens living longer than this (exp - iat) are refused.
    auth_max_token_lifetime: PositiveInt = 86_400
    # The upload page at `/`; production gateways serving only the API turn it off.
    upload_page: bool = True
    max_upload_bytes: PositiveInt = 50 * MiB
    # Larger uploads (or any the client asks so) go in parts: S3 multipart with a URL
    # per part. Every part but the last is exactly multipart_part_size (S3's minimum is
    # 5 MiB, its maximum part count 10,000). A multipart grant stays open for
    # multipart_upload_ttl: a phone resuming a 200 MiB upload needs longer than a PUT.
    multipart_threshold: PositiveInt = 16 * MiB
    max_multipart_bytes: PositiveInt = 200 * MiB
    multipart_part_size: int = Field(8 * MiB, ge=5 * MiB, le=5 * 1024 * MiB)
    multipart_upload_ttl: PresignedTtl = 86_400
    # SigV4 presigned URLs live at most a week: S3 refuses a longer X-Amz-Expires.
    upload_url_ttl: PresignedTtl = 900
    download_url_ttl: PresignedTtl = 3600

    # Verification limits (pict-rs-like defaults).
    max_image_pixels: PositiveInt = 40_000_000
    max_image_side: PositiveInt = 10_000
    max_frames: PositiveInt = 1000

    # Ingest worker: verifications at once, and the sweep for lost notifications and
    # lapsed upload URLs.
    verify_concurrency: PositiveInt = 8
    sweep_interval: Seconds = 60.0
    sweep_after: Seconds = 60.0

    # Thumbnail worker: threads rendering at once (0 = the container's CPU quota), the
    # memory renders share in MB (0 = half the container's memory limit, else 1024), and
    # the renditions as name:longest-side:format[:quality], comma-separated (both checked
    # at worker start-up).
    render_concurrency: int = Field(0, ge=0)
    render_memory_mb: int = Field(0, ge=0)
    renditions: str = "thumb:256:webp:80,preview:1280:jpeg:85"

    # Notifier.
    webhook_url: str = ""
    webhook_secret: SecretStr = SecretStr("")
    webhook_timeout: Seconds = 10.0
    # Users' own endpoints (POST /v1/webhooks): each attempt's delay, the first's included
    # (units ms, s, m, h, d; a bare number is seconds). Runs through broker delay queues.
    webhook_retry_schedule: str = "0,5s,5m,30m,2h,5h,10h,10h"
    # Deliveries in flight at once per notifier: a hanging endpoint holds only its own.
    webhook_concurrency: PositiveInt = 64
    # An endpoint whose deliveries all failed for this long is disabled (its owner told).
    webhook_disable_after: Seconds = 5 * 86_400.0
    # After a rotation the old secret signs too for this long.
    webhook_rotation_overlap: Seconds = 86_400.0
    # Users' URLs may be http and reach loopback/private addresses (`darkroom dev`, tests).
    webhook_allow_private_targets: bool = False
    # Encrypts endpoint secrets at rest (any 32+ random bytes, e.g. a whsec_ value); empty
    # stores them as they are. Changing it makes existing endpoints' secrets unreadable.
    webhook_secrets_key: SecretStr = SecretStr("")
    # Seconds between the notifier's looks for albums whose reveal time came.
    reveal_interval: Seconds = 5.0

    # Mail over SMTP: smtp://user:pass@host:port (STARTTLS when offered; ?starttls=true
    # requires it, ?starttls=false never tries) or smtps:// (TLS from the start). Empty:
    # no mail. The password may be URL-encoded.
    smtp_url: SecretStr = SecretStr("")
    mail_from: str = ""
    smtp_timeout: Seconds = 30.0

    # Health, readiness and metrics for the workers (the gateway serves them itself).
    health_host: str = "127.0.0.1"
    health_port: int = Field(8081, ge=0, le=65535)

    # Gateway API
    # RS256/ES256 bearer tokens: keys from this JWKS URL (beside or instead of the secret).
    auth_jwks_url: str = ""
    # Required `iss` and `aud`; both must be set with a JWKS URL (a provider signs tokens
    # for every application it serves, and only these two tell Darkroom's apart).
    auth_issuer: str = ""
    auth_audience: str = ""
    auth_leeway: float = Field(30.0, ge=0, le=300)
    auth_jwks_ttl: Seconds = 3600.0
    auth_jwks_refetch_interval: Seconds = 30.0
    # Per-user quotas (0 = unlimited) and the cap on uploads granted but not yet stored.
    quota_bytes: int = Field(0, ge=0)
    quota_photos: int = Field(0, ge=0)
    max_pending_uploads: int = Field(100, ge=0)
    # Requests per minute (0 = off); shared across gateway replicas when redis_url is set.
    rate_limit_user: int = Field(600, ge=0)
    rate_limit_ip: int = Field(1200, ge=0)
    redis_url: str = ""
    # Reverse proxies in front of the gateway whose X-Forwarded-For is trusted.
    trusted_proxies: int = Field(0, ge=0, le=10)
    # Download URLs are signed per window of this many seconds, so they repeat (cacheable).
    download_url_window: PositiveInt = 900
    cors_origins: str = ""  # comma-separated origins, or *
    # Wrong share-link passwords a minute per link (0 = off), across replicas with Redis.
    link_password_attempts: int = Field(10, ge=0)
    # Live events (GET /v1/events): open streams per user on each gateway replica, the
    # keep-alive comment interval, and the window of recent events each replica keeps in
    # memory for `Last-Event-ID` resumes (both bounds hold: events and seconds).
    events_max_streams_per_user: PositiveInt = 5
    events_keepalive: Seconds = 15.0
    events_replay_events: PositiveInt = 1000
    events_replay_seconds: Seconds = 600.0
    # How often an open stream checks its credentials again: an expired token or a
    # revoked API key ends it (the client reconnects and is told 401).
    events_recheck_seconds: Seconds = 60.0

    log_level: str = "info"
    log_json: bool | None = None  # None: JSON unless stderr is a terminal

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value.lower()

    @field_validator("auth_jwt_secret")
    @classmethod
    def _strong_jwt_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret and (problem := jwt_secret_problem(secret)):
            raise ValueError(problem)
        return value

    @field_validator("webhook_secret", "webhook_secrets_key")
    @classmethod
    def _strong_webhook_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret and (problem := webhook_secret_problem(secret)):
            raise ValueError(problem)
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @property
    def webhook_retry_delays_ms(self) -> tuple[int, ...]:
        return parse_schedule(self.webhook_retry_schedule)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.auth_jwks_url and not (self.auth_issuer and self.auth_audience):
            raise ValueError(
                "DARKROOM_AUTH_JWKS_URL needs DARKROOM_AUTH_ISSUER and DARKROOM_AUTH_AUDIENCE: "
                "without them any token the provider signs for another application is accepted"
            )
        if self.retry_base_ms > self.retry_cap_ms:
            raise ValueError("DARKROOM_RETRY_BASE_MS must not exceed DARKROOM_RETRY_CAP_MS")
        if self.max_multipart_bytes > 10_000 * self.multipart_part_size:
            raise ValueError(
                "DARKROOM_MAX_MULTIPART_BYTES needs more than S3's 10,000 parts of "
                "DARKROOM_MULTIPART_PART_SIZE"
            )
        if self.webhook_url and not self.webhook_secret.get_secret_value():
            raise ValueError("DARKROOM_WEBHOOK_URL is set but DARKROOM_WEBHOOK_SECRET is empty")
        if self.smtp_url.get_secret_value():
            if problem := smtp_url_problem(self.smtp_url.get_secret_value()):
                raise ValueError(f"DARKROOM_SMTP_URL: {problem}")
            if problem := sender_problem(self.mail_from):
                raise ValueError(f"DARKROOM_MAIL_FROM: {problem}")
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'darkroom.sqlite3'}"
