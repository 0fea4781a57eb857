"""What a chaos run does, from the command line and CHAOS_* environment variables."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

DEFAULT_UPLOADS = 500


@dataclass(frozen=True)
class ChaosConfig:
    uploads: int
    invalid_fraction: float  # share of uploads that must end rejected
    seed: int
    upload_rate: float  # uploads started per second (paces the load so faults land in it)
    client_concurrency: int
    kills_per_worker: int
    broker_cut_every_s: float
    broker_restarts: int  # full restarts of the run's own RabbitMQ node (graceful, crash, ...)
    database_restarts: int  # restarts of the run's own PostgreSQL (fast, immediate, ...)
    s3_error_rate: float  # share of the services' S3 calls answered 503
    s3_slow_rate: float  # share of S3 calls delayed
    s3_slow_ms: int
    duplicate_rate: float  # share of uploads whose storage event is re-published later
    early_rate: float  # share of uploads announced before their bytes are stored
    settle_timeout_s: float  # after the load: how long to wait for every photo to be final
    run_timeout_s: float  # hard limit on the whole run
    keep_logs: bool

    @property
    def load_s(self) -> float:
        """How long starting every upload takes."""
        return self.uploads / self.upload_rate


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def load_config(argv: list[str] | None = None) -> ChaosConfig:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--uploads", type=int, default=_env_int("CHAOS_UPLOADS", DEFAULT_UPLOADS))
    parser.add_argument("--seed", type=int, default=_env_int("CHAOS_SEED", 0))
    parser.add_argument(
        "--keep-logs", action="store_true", default=bool(os.environ.get("CHAOS_KEEP_LOGS"))
    )
    args = parser.parse_args(argv)
    uploads = max(1, args.uploads)
    # Spread the load over at least ~25 s so every kind of fault lands inside it.
    upload_rate = _env_float("CHAOS_UPLOAD_RATE", max(1.5, min(10.0, uploads / 25)))
    # One restart of each server per ~25 s of load, at least one: 1 each for 40 uploads,
    # 2 each for the default 500 (50 s of load).
    restarts = max(1, round(uploads / upload_rate / 25))
    return ChaosConfig(
        uploads=uploads,
        invalid_fraction=_env_float("CHAOS_INVALID_FRACTION", 0.3),
        seed=args.seed or int.from_bytes(os.urandom(4), "big"),
        upload_rate=upload_rate,
        client_concurrency=_env_int("CHAOS_CLIENTS", 12),
        kills_per_worker=_env_int("CHAOS_KILLS_PER_WORKER", 3),
        broker_cut_every_s=_env_float("CHAOS_BROKER_CUT_EVERY", 7.0),
        broker_restarts=_env_int("CHAOS_BROKER_RESTARTS", restarts),
        database_restarts=_env_int("CHAOS_DATABASE_RESTARTS", restarts),
        s3_error_rate=_env_float("CHAOS_S3_ERROR_RATE", 0.05),
        s3_slow_rate=_env_float("CHAOS_S3_SLOW_RATE", 0.1),
        s3_slow_ms=_env_int("CHAOS_S3_SLOW_MS", 400),
        duplicate_rate=_env_float("CHAOS_DUPLICATE_RATE", 0.2),
        early_rate=_env_float("CHAOS_EARLY_RATE", 0.05),
        settle_timeout_s=_env_float("CHAOS_SETTLE_TIMEOUT", 120.0),
        run_timeout_s=_env_float("CHAOS_RUN_TIMEOUT", 840.0),
        keep_logs=args.keep_logs,
    )
