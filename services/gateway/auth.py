"""Bearer JWTs (HS256 with DARKROOM_AUTH_JWT_SECRET). `sub` is the user id."""

from __future__ import annotations

import time

import jwt

from shared.errors import ConfigurationError

ALGORITHM = "HS256"
LEEWAY_S = 30


class Unauthorized(Exception):
    """The request carries no usable credentials; the message says why."""


def require_secret(secret: str) -> str:
    if len(secret) < 32:
        raise ConfigurationError(
            "DARKROOM_AUTH_JWT_SECRET must be set to at least 32 characters "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    return secret


def issue_token(secret: str, user_id: str, *, ttl_s: int = 86_400) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + ttl_s}, secret, ALGORITHM)


def user_from_header(secret: str, header: str | None) -> str:
    if not header:
        raise Unauthorized("missing Authorization header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    try:
        claims = jwt.decode(
            token.strip(),
            secret,
            algorithms=[ALGORITHM],
            leeway=LEEWAY_S,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise Unauthorized("token has no usable 'sub' claim")
    return sub
