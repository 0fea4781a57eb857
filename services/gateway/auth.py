"""Bearer JWTs: HS256 with DARKROOM_AUTH_JWT_SECRET, or RS256/ES256 with the keys published
at DARKROOM_AUTH_JWKS_URL. `sub` is the user id; an `email` claim, unless `email_verified`
says false, is the user's address for Darkroom's mails.

The algorithm a token names picks the key source, and each source accepts only its own
algorithms: `none` and HS256-signed-with-a-public-key confusions are refused by design.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from jwt.types import Options

from shared.errors import ConfigurationError, TransientError
from shared.logging import get_logger
from shared.secrets import JWT_HOWTO as HOWTO
from shared.secrets import jwt_secret_problem
from shared.settings import Settings
from shared.text import normal_user_id, usable_email, user_id_problem

log = get_logger(__name__)

ALGORITHM = "HS256"
ASYMMETRIC = ("RS256", "ES256")
_FAILURES: list[tuple[type[jwt.InvalidTokenError], str]] = [
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not valid yet (nbf)"),
    (jwt.InvalidIssuerError, "token has the wrong issuer"),
    (jwt.InvalidAudienceError, "token has the wrong audience"),
    (jwt.InvalidSignatureError, "invalid token: the signature does not verify"),
]


class Unauthorized(Exception):
    """The request carries no usable credentials; the message says why."""


class TokenTooLong(Unauthorized):
    """A valid signature on a token meant to live longer than the gateway allows."""


class KeySetUnavailable(TransientError):
    what = "the identity provider's key set"


def require_secret(secret: str) -> str:
    if not secret:
        raise ConfigurationError(
            f"DARKROOM_AUTH_JWT_SECRET must be set; generate one with: {HOWTO}"
        )
    if problem := jwt_secret_problem(secret):
        raise ConfigurationError(f"DARKROOM_AUTH_JWT_SECRET: {problem}")
    return secret


def check_auth_settings(settings: Settings) -> None:
    """A strong secret if one is set, and at least one way to verify tokens. Settings from
    the environment were checked already; copies made in code (dev, tests) were not."""
    secret = settings.auth_jwt_secret.get_secret_value()
    if secret or not settings.auth_jwks_url:
        require_secret(secret)
    if settings.auth_jwks_url and not (settings.auth_issuer and settings.auth_audience):
        raise ConfigurationError(
            "DARKROOM_AUTH_JWKS_URL needs DARKROOM_AUTH_ISSUER and DARKROOM_AUTH_AUDIENCE"
        )


def issue_token(secret: str, user_id: str, *, ttl_s: int = 86_400, email: str | None = None) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_s}
    if email is not None:
        claims["email"] = email
    return jwt.encode(claims, secret, ALGORITHM)


@dataclass(frozen=True)
class Identity:
    user_id: str
    email: str | None  # a usable address the token claims, or None


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthorized("missing Authorization header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return token.strip()


class JwksCache:
    """The provider's public keys by kid, refreshed after `ttl_s`, and fetched again when a
    token names a kid not in the set (key rotation), at most once per `refetch_s`."""

    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        *,
        ttl_s: float,
        refetch_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url, self._http, self._clock = url, http, clock
        self._ttl_s, self._refetch_s = ttl_s, refetch_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -math.inf
        self._refetched_at = -math.inf
        self._failed_at = -math.inf
        self._lock = asyncio.Lock()
        self.fetches = 0
        self.generation = 0  # changes whenever the key set is replaced

    async def key(self, kid: str) -> jwt.PyJWK:
        if not self._keys and self._clock() - self._failed_at < self._refetch_s:
            # Forged tokens must not turn a provider outage into a fetch per request.
            raise KeySetUnavailable("the JWKS could not be fetched; retrying shortly")
        if self._clock() - self._fetched_at >= self._ttl_s:
            await self._refresh(self._fetched_at)
        elif kid not in self._keys and self._clock() - self._refetched_at >= self._refetch_s:
            self._refetched_at = self._clock()
            await self._refresh(self._fetched_at)
        if kid not in self._keys:
            raise Unauthorized("token is signed with an unknown key (kid)")
        return self._keys[kid]

    async def _refresh(self, seen: float) -> None:
        async with self._lock:
            if self._fetched_at != seen:
                return  # another request refreshed the set while this one waited
            try:
                self._keys = await self._fetch()
                self.generation += 1
            except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
                log.warning("JWKS fetch failed", url=self._url, error=str(exc))
                self._failed_at = self._clock()
                if not self._keys:
                    raise KeySetUnavailable(f"cannot fetch the JWKS: {exc}") from exc
            self._fetched_at = self._clock()

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        self.fetches += 1
        timeout = aiohttp.ClientTimeout(total=10)
        async with self._http.get(self._url, timeout=timeout) as resp:
            resp.raise_for_status()
            document = json.loads(await resp.read())
        keys = jwt.PyJWKSet.from_dict(document).keys
        return {k.key_id: k for k in keys if k.key_id and k.algorithm_name in ASYMMETRIC}


# A verified token is taken again without its signature check (0.1-0.2 ms, 14% of a
# grant's CPU) until it expires, for at most REVERIFY_S, and only while the JWKS is the
# one it was checked against, so a key withdrawn from the set stops working at once.
REVERIFY_S = 300.0
VERIFIED_KEPT = 10_000


@dataclass(frozen=True)
class JwtVerifier:
    secret: str
    jwks: JwksCache | None
    issuer: str
    audience: str
    leeway: float
    max_lifetime: int
    _verified: dict[str, tuple[Identity, float, int]] = field(default_factory=dict, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, jwks: JwksCache | None) -> JwtVerifier:
        return cls(
            settings.auth_jwt_secret.get_secret_value(),
            jwks,
            settings.auth_issuer,
            settings.auth_audience,
            settings.auth_leeway,
            settings.auth_max_token_lifetime,
        )

    async def user(self, token: str) -> str:
        return (await self.identity(token)).user_id

    async def identity(self, token: str) -> Identity:
        now, keys = time.time(), self.jwks.generation if self.jwks else 0
        known = self._verified.get(token)
        if known is not None and now < known[1] and keys == known[2]:
            return known[0]
        identity, expires = await self._verify(token)
        if len(self._verified) >= VERIFIED_KEPT:
            self._verified.clear()
        until = min(expires + self.leeway, now + REVERIFY_S)
        self._verified[token] = (identity, until, self.jwks.generation if self.jwks else 0)
        return identity

    async def _verify(self, token: str) -> tuple[Identity, float]:
        """The token's identity and expiry, once its signature and claims check out."""
        key, algorithm = await self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                leeway=self.leeway,
                issuer=self.issuer or None,
                audience=self.audience or None,
                options=self._options(),
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(_explain(exc)) from exc
        self._check_lifetime(claims)
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise Unauthorized("token has no usable 'sub' claim: it is not a string")
        if problem := user_id_problem(sub):
            raise Unauthorized(f"token has no usable 'sub' claim: {problem}")
        # An address the provider says it did not verify is nobody's to mail.
        email = None if claims.get("email_verified") is False else usable_email(claims.get("email"))
        return Identity(normal_user_id(sub), email), float(claims["exp"])

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """exp - iat, or without iat what is left of it now (clock skew allowed for)."""
        exp, iat = claims["exp"], claims.get("iat")
        allowed: float = self.max_lifetime
        if isinstance(iat, int | float) and not isinstance(iat, bool):
            lifetime = exp - iat
        else:
            lifetime, allowed = exp - time.time(), allowed + self.leeway
        if lifetime > allowed:
            raise TokenTooLong(
                f"token lives {int(lifetime)} s, longer than the {self.max_lifetime} s this "
                "gateway accepts (DARKROOM_AUTH_MAX_TOKEN_LIFETIME); issue shorter-lived tokens"
            )

    def _options(self) -> Options:
        required = ["exp", "sub"] + ["iss"] * bool(self.issuer) + ["aud"] * bool(self.audience)
        return {"require": required, "verify_aud": bool(self.audience)}

    async def _key_for(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm == ALGORITHM and self.secret:
            return self.secret, algorithm
        if algorithm in ASYMMETRIC and self.jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise Unauthorized("token has no 'kid' header")
            jwk = await self.jwks.key(kid)
            if jwk.algorithm_name != algorithm:
                raise Unauthorized(f"key {kid!r} is not a {algorithm} key")
            return jwk.key, algorithm
        raise Unauthorized(f"invalid token: algorithm {algorithm!r} is not accepted")


def _explain(exc: jwt.InvalidTokenError) -> str:
    for kind, text in _FAILURES:
        if isinstance(exc, kind):
            return text
    return f"invalid token: {exc}"
