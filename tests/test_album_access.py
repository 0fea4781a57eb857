"""Who may do what with an album, its photos and its links, before and after the reveal,
on SQLite and PostgreSQL: one table of expected statuses, walked on fresh albums.

Every cell gets an album and users of its own (owner `olive`, contributor `cora` who
uploaded one ready photo into it, viewer `vic`; `otto` is an outsider), so cells that
delete or change things do not disturb the others. "409/302" means 409 before the reveal
and 302 after. Before the reveal no answer may carry a URL, a filename, dimensions or
facts, and a sealed photo's view carries exactly the seven sealed fields.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.settings import Settings
from tests.gateway_harness import Gateway, gateway, grant_body, ready_photo

ACTORS = ("olive", "cora", "vic", "otto")  # owner, contributor, viewer, outsider

# The body column names one of request_body()'s; "-" is none.
MATRIX = """
method  path                                    body        olive    cora     vic      otto
GET     /v1/albums                              -           200      200      200      200
GET     /v1/albums/{album}                      -           200      200      200      404
PATCH   /v1/albums/{album}                      title       200      403      403      404
PATCH   /v1/albums/{album}                      later       200/409  403      403      404
DELETE  /v1/albums/{album}                      -           204      403      403      404
GET     /v1/albums/{album}/members              -           200      200      200      404
PUT     /v1/albums/{album}/members/nell         viewer      200      403      403      404
DELETE  /v1/albums/{album}/members/{vic}        -           204      403      204      404
POST    /v1/uploads                             grant       201      201      403      404
POST    /v1/uploads                             same-bytes  201      200      403      404
POST    /v1/uploads:batch                       batch       201      201      403      404
POST    /v1/uploads/{photo}/complete            -           403      200      403      404
GET     /v1/photos                              -           200      200      200      200
GET     /v1/photos?album_id={album}             -           200      200      200      200
GET     /v1/photos/{photo}                      -           200      200      200      404
GET     /v1/photos/{photo}/thumb                -           409/302  409/302  409/302  404
GET     /v1/photos/{photo}/original             -           409/302  409/302  409/302  404
DELETE  /v1/photos/{photo}                      -           403      204      403      404
GET     /v1/albums/{album}/photos               -           200      200      200      404
DELETE  /v1/albums/{album}/photos/{photo}       -           204      403      403      404
POST    /v1/albums/{album}/links                link        201      403      403      404
GET     /v1/albums/{album}/links                -           200      403      403      404
DELETE  /v1/albums/{album}/links/{link}         -           204      403      403      404
POST    /v1/photos/{photo}/links                link        403      201      403      404
GET     /v1/photos/{photo}/links                -           403      200      403      404
DELETE  /v1/photos/{photo}/links/{photo_link}   -           403      204      403      404
"""

# GET /v1/shared/{token} without an account: which link, the password header sent
# ("-": none), and the answer before and after the reveal (the same, for links).
LINKS = """
link      password  answer
guarded   s3cret    200
guarded   -         401 password_required
guarded   guess     401 wrong_password
open      -         200
open      anything  200
expired   -         410 link_expired
revoked   -         404 not_found
photo     -         200
unknown   -         404 not_found
"""

CODES = {403: {"insufficient_role"}, 404: {"not_found"}, 409: {"sealed", "already_revealed"}}
# What may never be in an answer about a sealed photo.
TELLTALES = {"url", "filename", "width", "height", "facts", "renditions", "original", "size"}
SEALED = {"id", "album_id", "owner_id", "status", "sealed", "reveal_at", "created_at"}


@pytest.fixture
async def gw(on_both: Settings) -> AsyncIterator[Gateway]:
    unlimited = on_both.model_copy(update={"rate_limit_user": 0, "rate_limit_ip": 0})
    async with gateway(unlimited) as gw:
        yield gw


@dataclass
class Scene:
    names: dict[str, str]  # users (olive: olive-<n>), ids, times
    tokens: dict[str, str]
    sha256: str

    def user(self, actor: str) -> str:
        return self.names[actor]


async def call(gw: Gateway, user: str, method: str, path: str, body: Any = None) -> Any:
    resp = await gw.client.request(method, path, json=body, headers=gw.auth(user))
    assert resp.status < 300, (method, path, resp.status, await resp.text())
    return await resp.json() if resp.status != 204 else None


async def scene(gw: Gateway, revealed: bool, *, every_link: bool = False) -> Scene:
    users = {actor: f"{actor}-{uuid.uuid4().hex[:8]}" for actor in ACTORS}
    olive, cora = users["olive"], users["cora"]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    made_album = await call(gw, olive, "POST", "/v1/albums", {"title": "Party", "reveal_at": later})
    album = made_album["id"]
    for actor, role in (("cora", "contributor"), ("vic", "viewer")):
        await call(gw, olive, "PUT", f"/v1/albums/{album}/members/{users[actor]}", {"role": role})
    photo, data = await ready_photo(gw, cora, store_objects=False, album_id=album)
    links = f"/v1/albums/{album}/links"
    made = {
        "open": await call(gw, olive, "POST", links, {}),
        "photo": await call(gw, cora, "POST", f"/v1/photos/{photo}/links", {}),
    }
    if every_link:  # argon2 takes its time: only where the links are the subject
        made["guarded"] = await call(gw, olive, "POST", links, {"password": "s3cret"})
        expired = {"expires_at": "2020-01-01T00:00:00Z"}
        made["expired"] = await call(gw, olive, "POST", links, expired)
        made["revoked"] = await call(gw, olive, "POST", links, {})
        await call(gw, olive, "DELETE", f"{links}/{made['revoked']['id']}")
    if revealed:
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        await call(gw, olive, "PATCH", f"/v1/albums/{album}", {"reveal_at": past})
    names = users | {
        "album": album,
        "photo": photo,
        "link": made["open"]["id"],
        "photo_link": made["photo"]["id"],
        "later": later,
    }
    tokens = {name: link["token"] for name, link in made.items()} | {"unknown": "x" * 43}
    return Scene(names, tokens, hashlib.sha256(data).hexdigest())


def request_body(body: str, s: Scene) -> Any:
    album = s.names["album"]
    return {
        "-": None,
        "title": {"title": "Renamed"},
        "later": {"reveal_at": s.names["later"]},  # an hour on
        "viewer": {"role": "viewer"},
        "grant": grant_body(album_id=album),
        "same-bytes": grant_body(album_id=album, sha256=s.sha256),
        "batch": {"items": [grant_body(album_id=album), grant_body(album_id=album)]},
        "link": {},
    }[body]


def rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.strip().splitlines()[1:]]


def telltales(body: Any) -> list[str]:
    """Everything in an answer that would show a sealed photo's contents."""
    found: list[str] = []
    if isinstance(body, dict):
        if body.get("sealed") is True and "status" in body and set(body) != SEALED:
            found.append(f"sealed view with {sorted(body)}")
        for key, value in body.items():
            if key in TELLTALES:
                found.append(key)
            found += telltales(value)
    elif isinstance(body, list):
        for value in body:
            found += telltales(value)
    elif isinstance(body, str) and "://" in body:
        found.append(body)
    return found


def expected(cell: str, revealed: bool) -> int:
    before, _, after = cell.partition("/")
    return int(after if revealed and after else before)


@pytest.mark.parametrize("revealed", [False, True], ids=["before reveal", "after reveal"])
async def test_every_route_answers_each_role_as_the_table_says(gw: Gateway, revealed: bool) -> None:
    wrong: list[str] = []
    for method, path, body, *cells in rows(MATRIX):
        for user, cell in zip(ACTORS, cells, strict=True):
            s = await scene(gw, revealed)
            url = path.format(**s.names)
            resp = await gw.client.request(
                method,
                url,
                json=request_body(body, s),
                headers=gw.auth(s.user(user)),
                allow_redirects=False,
            )
            text = await resp.text()
            want = expected(cell, revealed)
            where = f"{method} {path} ({body}) as {user}"
            if resp.status != want:
                wrong.append(f"{where}: {resp.status}, expected {want}: {text[:200]}")
                continue
            answer: Any = json.loads(text) if text else {}
            if want >= 400 and want in CODES and answer["code"] not in CODES[want]:
                wrong.append(f"{where}: code {answer['code']}")
            # 201s are grants and links, with URLs of their own; 200s may show the photo.
            if not revealed and want == 200 and (leaked := telltales(answer)):
                wrong.append(f"{where}: sealed answer shows {leaked}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("revealed", [False, True], ids=["before reveal", "after reveal"])
async def test_share_links_answer_as_the_table_says(gw: Gateway, revealed: bool) -> None:
    s = await scene(gw, revealed, every_link=True)
    wrong: list[str] = []
    for link, password, status, *code in rows(LINKS):
        headers = {"X-Darkroom-Link-Password": password} if password != "-" else {}
        resp = await gw.client.get(f"/v1/shared/{s.tokens[link]}", headers=headers)
        answer = await resp.json(content_type=None)
        want = int(status)
        where = f"{link} link, password {password}"
        if resp.status != want:
            wrong.append(f"{where}: {resp.status}, expected {want}: {answer}")
            continue
        if code and answer["code"] != code[0]:
            wrong.append(f"{where}: code {answer['code']}, expected {code[0]}")
        if want == 200 and not revealed and (leaked := telltales(answer)):
            wrong.append(f"{where}: sealed answer shows {leaked}")
        if want == 200 and revealed:
            views = answer.get("items", [answer])
            shown = [sorted(v["renditions"]) for v in views]
            if shown != [["preview", "thumb"]] or any(v["original"] for v in views):
                wrong.append(f"{where}: shows {shown}, original {views[0]['original']}")
    assert not wrong, "\n".join(wrong)
