"""The caller's preferences (mail); the caller is recorded by services/gateway/known_users.py."""

from __future__ import annotations

from aiohttp import web

from services.gateway.context import RESOURCES
from services.gateway.inputs import parsed_body
from services.gateway.models import Preferences, respond
from services.gateway.problems import INVALID, MALFORMED_JSON
from services.gateway.registry import Answer, Routes
from services.gateway.security import authenticate
from shared.logging import get_logger
from shared.users import UserRecord

log = get_logger(__name__)
api = Routes("account")
SCOPE = "account:preferences"


def _preferences(user: UserRecord | None) -> Preferences:
    return Preferences(email_notifications=user.email_notifications if user else True)


@api.route(
    "GET",
    "/v1/me/preferences",
    "getPreferences",
    "The caller's preferences",
    {200: Answer("the preferences", Preferences)},
    scope=SCOPE,
)
async def get_preferences(request: web.Request) -> web.Response:
    user = (await authenticate(request, SCOPE)).user_id
    return respond(_preferences(await request.app[RESOURCES].users.get(user)))


@api.route(
    "PUT",
    "/v1/me/preferences",
    "putPreferences",
    "Set the caller's preferences",
    {200: Answer("the preferences now", Preferences)},
    scope=SCOPE,
    body=Preferences,
    faults=(MALFORMED_JSON, INVALID),
)
async def put_preferences(request: web.Request) -> web.Response:
    """Mail is on until turned off. Mails not yet sent when it is turned off are not sent:
    the preference is read as each mail goes out."""
    user = (await authenticate(request, SCOPE)).user_id
    wanted = await parsed_body(request, Preferences)
    record = await request.app[RESOURCES].users.set_preferences(
        user, email_notifications=wanted.email_notifications
    )
    log.info("preferences set", email_notifications=record.email_notifications)
    return respond(_preferences(record))
