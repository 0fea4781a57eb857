"""The browser-facing pages: the upload page at `/` and its assets, and the headers every
HTML page the gateway serves carries (the API docs at /docs too).

`darkroom dev` signs a token into the upload page, so that opening it is enough to try
Darkroom. Only a browser on the same machine gets it: the page must have been asked for
by a loopback Host name (a DNS-rebinding page names its own host), without an Origin
header, and on a gateway with no CORS, so no other site's script can read the page.
"""

from __future__ import annotations

import html
import ipaddress
from importlib.resources import files
from urllib.parse import urlsplit

from aiohttp import web

from services.gateway.auth import issue_token
from services.gateway.context import DEV_USER, RESOURCES
from shared.settings import Settings

# The address in dev tokens, so a newcomer's first request sends a welcome mail to
# `darkroom dev`'s catcher (/dev/mail).
DEV_EMAIL = "dev@example.com"
# The page's ES modules and its style sheet: no bundler, no CDN.
_SCRIPTS = ("main", "api", "uploads", "events", "gallery", "albums", "thumbhash")
_ASSETS = {f"{name}.js": "text/javascript" for name in _SCRIPTS} | {"upload.css": "text/css"}
_PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# Swagger UI sets style attributes from its script, hence 'unsafe-inline' for styles there.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def page_headers(csp: str) -> dict[str, str]:
    return {**_PAGE_HEADERS, "Content-Security-Policy": csp}


def storage_origin(settings: Settings) -> str:
    """Where the page's browser uploads to and loads thumbnails from."""
    endpoint = settings.s3_public_endpoint_url or settings.s3_endpoint_url
    if not endpoint:
        return "https://*.amazonaws.com"
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def upload_page_csp(settings: Settings) -> str:
    storage = storage_origin(settings)
    return (
        f"default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src 'self' data: {storage}; connect-src 'self' {storage}; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine: `localhost` or a loopback address."""
    if "@" in host:
        return False
    try:
        name = urlsplit(f"//{host}").hostname or ""
        return name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def dev_token_for(request: web.Request) -> str:
    """A fresh dev token for a same-machine browser in `darkroom dev`; otherwise none."""
    user = request.app[DEV_USER]
    settings = request.app[RESOURCES].settings
    if not user or settings.cors_origins.strip() or "Origin" in request.headers:
        return ""
    if not loopback_host(request.host):
        return ""
    secret = settings.auth_jwt_secret.get_secret_value()
    return issue_token(secret, user, ttl_s=settings.auth_max_token_lifetime, email=DEV_EMAIL)


async def index(request: web.Request) -> web.Response:
    page = files("services.gateway").joinpath("static/index.html").read_text()
    page = page.replace("__DEV_TOKEN__", html.escape(dev_token_for(request), quote=True))
    csp = upload_page_csp(request.app[RESOURCES].settings)
    return web.Response(text=page, content_type="text/html", headers=page_headers(csp))


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    text = files("services.gateway").joinpath(f"static/{name}").read_text()
    headers = {"X-Content-Type-Options": "nosniff"}
    return web.Response(text=text, content_type=_ASSETS[name], headers=headers)


def page_routes(settings: Settings) -> list[web.AbstractRouteDef]:
    """The upload page and its assets, unless DARKROOM_UPLOAD_PAGE is off."""
    if not settings.upload_page:
        return []
    names = "|".join(n.replace(".", "\\.") for n in _ASSETS)
    return [web.get("/", index), web.get(f"/assets/{{name:{names}}}", asset)]


# The Server header of every answer: no Python or aiohttp versions.
SERVER = "darkroom"
