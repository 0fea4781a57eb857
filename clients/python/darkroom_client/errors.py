"""Typed errors: each carries the problem `code`, the HTTP status and the detail the API
sent (RFC 9457 problem+json), so callers branch on classes or codes, never on text."""

from __future__ import annotations

from typing import Any


class DarkroomError(Exception):
    """Base of every error the client raises."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}" if code else detail)
        self.detail = detail
        self.status = status
        self.code = code
        self.problem: dict[str, Any] = problem or {}
        # Seconds the server asked to wait (Retry-After), on 429 and 503 answers.
        self.retry_after = retry_after


class BadRequest(DarkroomError):
    """400: the request could not be understood (malformed JSON, bad cursor...)."""


class Unauthorized(DarkroomError):
    """401: no credential, or one the API does not accept (expired, wrong signature)."""


class Forbidden(DarkroomError):
    """403: authenticated, but not allowed (`insufficient_scope`, `insufficient_role`)."""


class NotFound(DarkroomError):
    """404: missing, or someone else's (the API does not tell the two apart)."""


class Conflict(DarkroomError):
    """409: the state does not allow it (`not_ready`, `sealed`, quotas...)."""


class Gone(DarkroomError):
    """410: an expired share link."""


class TooLarge(DarkroomError):
    """413: a file or a quota in bytes is exceeded."""


class UnsupportedType(DarkroomError):
    """415: not an accepted image type."""


class InvalidRequest(DarkroomError):
    """422: the request failed validation; `problem["errors"]` lists the fields."""


class RateLimited(DarkroomError):
    """429 after every retry: `retry_after` is the server's last word, in seconds."""


class Unavailable(DarkroomError):
    """5xx after every retry, or the network failed every attempt."""


class StorageError(DarkroomError):
    """Storage (S3) refused an upload or a download; `detail` holds its answer."""


class Rejected(DarkroomError):
    """The photo was stored but verification refused it: `reason` is the API's code
    (`not_an_image`, `type_mismatch`, `size_mismatch`...)."""

    def __init__(self, photo_id: str, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason, code=reason)
        self.photo_id = photo_id
        self.reason = reason


_BY_STATUS: dict[int, type[DarkroomError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: TooLarge,
    415: UnsupportedType,
    422: InvalidRequest,
}


def error_for(status: int, body: Any, retry_after: float | None = None) -> DarkroomError:
    """The typed error for an API answer of `status` whose body is `body` (the parsed
    problem document, or whatever text came instead)."""
    problem = body if isinstance(body, dict) else {}
    detail = str(problem.get("detail") or problem.get("title") or body or f"HTTP {status}")
    code = problem.get("code") if isinstance(problem.get("code"), str) else None
    cls = _BY_STATUS.get(status, Unavailable if status >= 500 else DarkroomError)
    if status == 429:
        cls = RateLimited
    return cls(detail, status=status, code=code, problem=problem, retry_after=retry_after)
