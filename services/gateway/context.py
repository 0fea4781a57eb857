"""Typed keys for what the gateway's handlers find on the app."""

from __future__ import annotations

from aiohttp import web

from services.gateway.auth import JwtVerifier
from services.gateway.downloads import Downloads
from services.gateway.known_users import KnownUsers
from services.gateway.live import LiveHub
from services.gateway.passwords import Passwords
from shared.ratelimit import RateLimiter
from shared.resources import Resources

RESOURCES = web.AppKey("resources", Resources)
VERIFIER = web.AppKey("verifier", JwtVerifier)
LIMITER = web.AppKey("limiter", RateLimiter)
PASSWORDS = web.AppKey("passwords", Passwords)
DOWNLOADS = web.AppKey("downloads", Downloads)
# Users this gateway has recorded (services/gateway/me.py).
KNOWN_USERS = web.AppKey("known_users", KnownUsers)
# The user `darkroom dev` signs a token for into the upload page; empty everywhere else.
DEV_USER = web.AppKey("dev_user", str)
# The OpenAPI document, generated once per app (it states the app's own limits).
OPENAPI = web.AppKey("openapi", bytes)
# Live events of this replica, fanned out to its event streams.
LIVE = web.AppKey("live", LiveHub)
# Per request: the trace id (from X-Request-ID or new), echoed back and put in every event.
TRACE_ID = web.RequestKey("trace_id", str)
# Per request: its log fields, on every line it logs from the point they are added: the
# trace id, and what the handler adds (a grant's owner and how many uploads it granted,
# once a line of their own, 10-13 us a grant), the access line included.
ACCESS = web.RequestKey("access", dict[str, object])
# Per request: the CORS headers its answer gets (each also gets `Vary: Origin`); a stream
# sends them before it starts.
CORS_HEADERS = web.RequestKey("cors_headers", dict[str, str])
