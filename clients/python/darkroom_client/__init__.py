"""Darkroom's async Python SDK: `async with Client(url, token) as dr: await dr.upload(path)`.

The `darkroom-client` command line tool is built on it (`darkroom_client.cli`)."""

from darkroom_client.client import Client
from darkroom_client.errors import (
    BadRequest,
    Conflict,
    DarkroomError,
    Forbidden,
    Gone,
    InvalidRequest,
    NotFound,
    RateLimited,
    Rejected,
    StorageError,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedType,
)
from darkroom_client.models import ACCEPTED_TYPES, Event, Photo, UploadState
from darkroom_client.retry import RetryPolicy
from darkroom_client.source import Source
from darkroom_client.uploads import Outcome

__all__ = [
    "ACCEPTED_TYPES",
    "BadRequest",
    "Client",
    "Conflict",
    "DarkroomError",
    "Event",
    "Forbidden",
    "Gone",
    "InvalidRequest",
    "NotFound",
    "Outcome",
    "Photo",
    "RateLimited",
    "Rejected",
    "RetryPolicy",
    "Source",
    "StorageError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UnsupportedType",
    "UploadState",
]
