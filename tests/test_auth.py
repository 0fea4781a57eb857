"""Bearer JWTs: HS256 and RS256/ES256 from a JWKS served by a real local HTTP server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from services.gateway.app import create_app
from services.gateway.auth import JwksCache, JwtVerifier, Unauthorized, issue_token
from shared.errors import ConfigurationError
from shared.settings import Settings
from tests.conftest import JWT_SECRET, make_settings
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of
from tests.harness import free_port, serve_local

ISSUER = "https://idp.example/"
AUDIENCE = "darkroom-api"


@dataclass
class Signer:
    kid: str
    alg: str
    private: Any

    def token(self, **claims: Any) -> str:
        return jwt.encode(claims, self.private, self.alg, headers={"kid": self.kid})

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        as_jwk = RSAAlgorithm.to_jwk if self.alg == "RS256" else ECAlgorithm.to_jwk
        return {**as_jwk(public, as_dict=True), "kid": self.kid, "alg": self.alg, "use": "sig"}


def rsa_signer(kid: str) -> Signer:
    return Signer(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_signer(kid: str) -> Signer:
    return Signer(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


@dataclass
class Idp:
    """An identity provider's JWKS endpoint on a real local port."""

    url: str = ""
    published: list[Signer] = field(default_factory=list)
    fetches: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response({"keys": [s.jwk() for s in self.published]})


@pytest.fixture(scope="module")
def rs1() -> Signer:
    return rsa_signer("rs-1")


@pytest.fixture(scope="module")
def es1() -> Signer:
    return ec_signer("es-1")


@pytest.fixture
async def idp(rs1: Signer, es1: Signer) -> AsyncIterator[Idp]:
    provider = Idp(published=[rs1, es1])
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", provider.handle)
    async with serve_local(app) as base:
        provider.url = f"{base}/.well-known/jwks.json"
        yield provider


@pytest.fixture
async def gw(settings: Settings, idp: Idp) -> AsyncIterator[Gateway]:
    configured = settings.model_copy(
        update={"auth_jwks_url": idp.url, "auth_issuer": ISSUER, "auth_audience": AUDIENCE}
    )
    async with gateway(configured) as gw:
        yield gw


def claims(now: int, **overrides: Any) -> dict[str, Any]:
    base = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def unsigned(now: int) -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(now))}."


def tampered(signer: Signer, now: int) -> str:
    header, _, signature = signer.token(**claims(now)).split(".")
    return f"{header}.{b64(claims(now, sub='mallory'))}.{signature}"


def confused(signer: Signer, now: int) -> str:
    """HS256 keyed with the provider's public key: the classic algorithm confusion."""
    pem = signer.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64({"alg": "HS256", "typ": "JWT", "kid": signer.kid})
    body = f"{header}.{b64(claims(now))}"
    mac = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(body.encode(), pem)
    return f"{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


Make = Callable[[int, Signer, Signer], str]

ACCEPTED: dict[str, Make] = {
    "rs256": lambda now, rs, es: rs.token(**claims(now)),
    "es256": lambda now, rs, es: es.token(**claims(now)),
    "hs256": lambda now, rs, es: jwt.encode(claims(now), JWT_SECRET, "HS256"),
    "expired-within-skew": lambda now, rs, es: rs.token(**claims(now, exp=now - 10)),
    "nbf-within-skew": lambda now, rs, es: rs.token(**claims(now, nbf=now + 10)),
}

REJECTED: dict[str, tuple[Make, str]] = {
    "expired": (lambda now, rs, es: rs.token(**claims(now, exp=now - 3600)), "expired"),
    "not-yet-valid": (lambda now, rs, es: es.token(**claims(now, nbf=now + 3600)), "not valid yet"),
    "wrong-issuer": (lambda now, rs, es: rs.token(**claims(now, iss="https://evil/")), "issuer"),
    "no-issuer": (lambda now, rs, es: rs.token(**claims(now, iss=None)), "iss"),
    "wrong-audience": (lambda now, rs, es: rs.token(**claims(now, aud="other")), "audience"),
    "no-audience": (lambda now, rs, es: es.token(**claims(now, aud=None)), "aud"),
    "no-sub": (lambda now, rs, es: rs.token(**claims(now, sub=None)), "sub"),
    "empty-sub": (lambda now, rs, es: rs.token(**claims(now, sub="")), "sub"),
    "no-exp": (lambda now, rs, es: rs.token(**claims(now, exp=None)), "exp"),
    "alg-none": (lambda now, rs, es: unsigned(now), "not accepted"),
    "tampered": (lambda now, rs, es: tampered(rs, now), "signature"),
    "wrong-key": (
        lambda now, rs, es: Signer(rs.kid, "RS256", rsa_signer("x").private).token(**claims(now)),
        "signature",
    ),
    "hs256-wrong-secret": (
        lambda now, rs, es: jwt.encode(claims(now), "n" * 40, "HS256"),
        "signature",
    ),
    "hs256-with-public-key": (lambda now, rs, es: confused(rs, now), "signature"),
    "kid-of-other-alg": (
        lambda now, rs, es: Signer(es.kid, "RS256", rs.private).token(**claims(now)),
        "not a RS256 key",
    ),
    "no-kid": (lambda now, rs, es: jwt.encode(claims(now), rs.private, "RS256"), "kid"),
}


@pytest.mark.parametrize("make", ACCEPTED.values(), ids=ACCEPTED.keys())
async def test_valid_tokens_are_accepted(gw: Gateway, rs1: Signer, es1: Signer, make: Make) -> None:
    token = make(int(time.time()), rs1, es1)
    resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize(("make", "detail"), REJECTED.values(), ids=REJECTED.keys())
async def test_bad_tokens_get_401_problem_with_challenge(
    gw: Gateway, rs1: Signer, es1: Signer, make: Make, detail: str
) -> None:
    token = make(int(time.time()), rs1, es1)
    resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {token}"})
    body = await problem_of(resp, 401)
    assert detail in body["detail"]
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="darkroom", error="invalid_token"'


async def test_unknown_kid_refetches_the_rotated_jwks_at_most_once_per_interval(
    gw: Gateway, idp: Idp, rs1: Signer
) -> None:
    now = int(time.time())

    async def status(signer: Signer) -> int:
        headers = {"Authorization": f"Bearer {signer.token(**claims(now))}"}
        return (await gw.client.get("/v1/photos", headers=headers)).status

    assert await status(rs1) == 200
    assert idp.fetches == 1
    assert await status(rs1) == 200
    assert idp.fetches == 1, "keys are cached"

    rotated = rsa_signer("rs-2")
    idp.published = [rotated]
    assert await status(rotated) == 200
    assert idp.fetches == 2, "an unknown kid fetched the set again"

    assert await status(rsa_signer("rs-3")) == 401
    assert await status(rsa_signer("rs-4")) == 401
    assert idp.fetches == 2, "refetches are rate-limited"
    assert await status(rs1) == 401, "the retired key is gone"


async def test_jwks_refetch_allowed_again_after_the_interval(idp: Idp, rs1: Signer) -> None:
    clock = [1000.0]
    async with aiohttp.ClientSession() as http:
        cache = JwksCache(idp.url, http, ttl_s=3600, refetch_s=30, clock=lambda: clock[0])
        await cache.key(rs1.kid)
        clock[0] += 1
        with pytest.raises(Unauthorized, match="unknown key"):
            await cache.key("nope")
        rotated = rsa_signer("rs-5")
        idp.published = [rotated]
        with pytest.raises(Unauthorized, match="unknown key"):
            await cache.key(rotated.kid)  # within the interval: not fetched
        assert idp.fetches == 2
        clock[0] += 30
        assert (await cache.key(rotated.kid)).key_id == rotated.kid
        assert idp.fetches == 3
        clock[0] += 3600
        idp.published = [rs1]
        assert (await cache.key(rs1.kid)).key_id == rs1.kid, "refreshed after the TTL"


async def test_unreachable_jwks_is_a_503_not_a_401(settings: Settings, rs1: Signer) -> None:
    dead = settings.model_copy(
        update={
            "auth_jwks_url": f"http://127.0.0.1:{free_port()}/jwks",
            "auth_issuer": ISSUER,
            "auth_audience": AUDIENCE,
        }
    )
    async with gateway(dead) as gw:
        token = rs1.token(**claims(int(time.time())))
        resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {token}"})
        body = await problem_of(resp, 503)
        assert "key set" in body["detail"] and resp.headers["Retry-After"]


async def test_jwks_only_configuration_needs_no_secret(
    settings: Settings, idp: Idp, rs1: Signer
) -> None:
    from pydantic import SecretStr

    jwks_only = settings.model_copy(
        update={
            "auth_jwks_url": idp.url,
            "auth_issuer": ISSUER,
            "auth_audience": AUDIENCE,
            "auth_jwt_secret": SecretStr(""),
        }
    )
    async with gateway(jwks_only) as gw:
        good = rs1.token(**claims(int(time.time())))
        resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {good}"})
        assert resp.status == 200
        hs = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, JWT_SECRET, "HS256")
        resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {hs}"})
        assert "not accepted" in (await problem_of(resp, 401))["detail"]


async def test_an_empty_key_set_is_a_503(gw: Gateway, idp: Idp, rs1: Signer) -> None:
    idp.published = []
    token = rs1.token(**claims(int(time.time())))
    resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {token}"})
    assert "key set" in (await problem_of(resp, 503))["detail"]


def test_a_jwks_url_without_issuer_and_audience_is_refused_at_start_up() -> None:
    for missing in ({"auth_issuer": ISSUER}, {"auth_audience": AUDIENCE}, {}):
        with pytest.raises(ValidationError, match="ISSUER and DARKROOM_AUTH_AUDIENCE"):
            make_settings(auth_jwks_url="https://idp.example/jwks", **missing)
    make_settings(
        auth_jwks_url="https://idp.example/jwks", auth_issuer=ISSUER, auth_audience=AUDIENCE
    )


async def test_a_gateway_built_from_code_with_jwks_but_no_audience_does_not_start(
    settings: Settings,
) -> None:
    loose = settings.model_copy(update={"auth_jwks_url": "https://idp.example/jwks"})
    with pytest.raises(ConfigurationError, match="AUDIENCE"):
        create_app(loose)


@pytest.mark.parametrize(
    "lifetime",
    [
        {"iat": 0, "exp": 100 * 365 * 86_400},
        {"iat": None, "exp": 100 * 365 * 86_400},
        {"iat": 0, "exp": 86_400 + 1},
    ],
    ids=["a-century", "a-century-without-iat", "a-day-and-a-second"],
)
async def test_tokens_living_longer_than_the_maximum_are_refused(
    gw: Gateway, rs1: Signer, lifetime: dict[str, int | None]
) -> None:
    now = int(time.time())
    iat = None if lifetime["iat"] is None else now - 10
    exp = now - 10 + (lifetime["exp"] or 0)
    for token in (
        rs1.token(**claims(now, iat=iat, exp=exp)),
        jwt.encode(claims(now, iat=iat, exp=exp), JWT_SECRET, "HS256"),
    ):
        resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {token}"})
        body = await problem_of(resp, 401)
        assert body["code"] == "token_lifetime_too_long"
        assert "DARKROOM_AUTH_MAX_TOKEN_LIFETIME" in body["detail"]


async def test_a_token_of_exactly_the_maximum_lifetime_is_accepted(
    gw: Gateway, rs1: Signer
) -> None:
    now = int(time.time())
    token = rs1.token(**claims(now, iat=now, exp=now + 86_400))
    resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200, await resp.text()


async def test_the_maximum_lifetime_is_a_setting(settings: Settings) -> None:
    short = settings.model_copy(update={"auth_max_token_lifetime": 600})
    async with gateway(short) as gw:
        hour = issue_token(JWT_SECRET, "alice", ttl_s=3600)
        resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {hour}"})
        assert (await problem_of(resp, 401))["code"] == "token_lifetime_too_long"
        minutes = issue_token(JWT_SECRET, "alice", ttl_s=600)
        resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {minutes}"})
        assert resp.status == 200


@pytest.mark.parametrize(
    "sub",
    ["ali\u200bce", "alice\u202e", "\u2066alice", "ali\u2028ce", "alice\ufeff", "al\x00ice"],
    ids=["zero-width-space", "bidi-override", "bidi-isolate", "line-separator", "bom", "nul"],
)
async def test_subjects_with_invisible_characters_are_refused(
    gw: Gateway, rs1: Signer, sub: str
) -> None:
    token = rs1.token(**claims(int(time.time()), sub=sub))
    resp = await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {token}"})
    body = await problem_of(resp, 401)
    assert "invisible character" in body["detail"]


async def test_a_decomposed_subject_is_the_same_user_as_the_composed_one(
    gw: Gateway, rs1: Signer
) -> None:
    composed, decomposed = "zo\u00eb", "zoe\u0308"
    now = int(time.time())

    def auth(sub: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {rs1.token(**claims(now, sub=sub))}"}

    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=auth(decomposed))
    assert resp.status == 201, await resp.text()
    photo_id = (await resp.json())["photo_id"]
    assert (await gw.res.store.get(photo_id)).owner_id == composed  # type: ignore[union-attr]
    resp = await gw.client.get(f"/v1/photos/{photo_id}", headers=auth(composed))
    assert resp.status == 200


async def test_a_token_accepted_once_is_refused_once_it_expires() -> None:
    verifier = JwtVerifier(JWT_SECRET, None, "", "", leeway=0, max_lifetime=3600)
    expires = int(time.time()) + 1
    token = jwt.encode({"sub": "ann", "exp": expires}, JWT_SECRET, "HS256")
    assert await verifier.user(token) == "ann"
    assert await verifier.user(token) == "ann"
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.01)  # until the token lapses
    with pytest.raises(Unauthorized, match="expired"):
        await verifier.user(token)
