"""Who is calling, and whether they may: bearer JWTs or API keys, scopes, rate limits."""

from __future__ import annotations

import math
from typing import NamedTuple

from aiohttp import web

from services.gateway.apikeys import looks_like_key, lookup
from services.gateway.auth import TokenTooLong, Unauthorized, bearer_token
from services.gateway.context import ACCESS, KNOWN_USERS, LIMITER, RESOURCES, TRACE_ID, VERIFIER
from services.gateway.problems import (
    INSUFFICIENT_SCOPE,
    RATE_LIMITED,
    TOKEN_TOO_LONG,
    UNAUTHORIZED,
    USER_REQUIRED,
    Handler,
)
from shared.logging import log_context
from shared.text import normal_user_id, user_id_problem

ACT_AS = "X-Darkroom-User"


class Caller(NamedTuple):
    """Who is calling (a tuple: a frozen dataclass took 7.9k instructions to make, one a
    request)."""

    user_id: str
    key_id: str | None = None  # the API key acting for the user; None for the user's token
    email: str | None = None  # the address the user's token claims


async def authenticate(request: web.Request, scope: str) -> Caller:
    """The caller, allowed `scope` and within its rate limit; otherwise a 4xx problem."""
    caller = await identify(request, scope)
    await enforce_limit(request, f"user:{caller.user_id}", "user")
    if caller.email is not None:  # without an address there is nothing to record
        await request.app[KNOWN_USERS].seen(
            caller.user_id, caller.email, trace_id=request[TRACE_ID]
        )
    return caller


async def identify(request: web.Request, scope: str) -> Caller:
    """The caller, allowed `scope` (rate limits aside: a long request checking its
    credentials again is not another request)."""
    header = request.headers.get("Authorization")
    try:
        token = bearer_token(header)
        if looks_like_key(token):
            caller = await _key_caller(request, token, scope)
        else:
            identity = await request.app[VERIFIER].identity(token)
            caller = Caller(identity.user_id, email=identity.email)
    except Unauthorized as exc:
        challenge = 'Bearer realm="darkroom"' + (', error="invalid_token"' if header else "")
        fault = TOKEN_TOO_LONG if isinstance(exc, TokenTooLong) else UNAUTHORIZED
        raise fault(str(exc), headers={"WWW-Authenticate": challenge}) from exc
    return caller


async def _key_caller(request: web.Request, token: str, scope: str) -> Caller:
    key = await lookup(request.app[RESOURCES].database, token)
    if key is None or key.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key")
    request[ACCESS]["api_key"] = key.id  # the access line names the key (docs/api.md)
    with log_context(api_key=key.id):
        if scope not in key.scopes:
            raise INSUFFICIENT_SCOPE(
                f"API key {key.id} lacks the {scope!r} scope",
                headers={
                    "WWW-Authenticate": f'Bearer realm="darkroom", error="insufficient_scope", '
                    f'scope="{scope}"'
                },
            )
        user = request.headers.get(ACT_AS, "").strip()
        if not user:
            raise USER_REQUIRED(f"an API key acts for the user named in {ACT_AS}")
        if problem := user_id_problem(user):
            raise USER_REQUIRED(f"{ACT_AS} cannot name a user: {problem}")
        return Caller(normal_user_id(user), key.id)


async def enforce_limit(request: web.Request, key: str, kind: str) -> None:
    settings = request.app[RESOURCES].settings
    per_minute = settings.rate_limit_user if kind == "user" else settings.rate_limit_ip
    if not per_minute:
        return
    decision = await request.app[LIMITER].hit(key, per_minute)
    if not decision.allowed:
        wait = max(1, math.ceil(decision.retry_after))
        raise RATE_LIMITED(
            f"too many requests for this {kind}; retry in {wait} s",
            headers={"Retry-After": str(wait)},
            limit_per_minute=per_minute,
        )


def client_ip(request: web.Request, trusted_proxies: int) -> str:
    """The peer address, or with trusted proxies in front, the address the outermost of
    them saw (an X-Forwarded-For entry a client wrote itself is never trusted)."""
    if trusted_proxies:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        if len(hops) >= trusted_proxies and hops[-trusted_proxies]:
            return hops[-trusted_proxies]
    return request.remote or "unknown"


async def limited(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer, once the client IP's rate limit allows the request."""
    if request.path.startswith("/v1/"):
        ip = client_ip(request, request.app[RESOURCES].settings.trusted_proxies)
        await enforce_limit(request, f"ip:{ip}", "client IP")
    return await handler(request)
