"""Photo records as the API shows them: the view model, with download links once ready."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from aiohttp import web
from pydantic_core import from_json, to_json

from services.gateway.access import sealed
from services.gateway.context import DOWNLOADS, RESOURCES
from services.gateway.downloads import Sign, Window
from services.gateway.models import (
    AnyPhotoView,
    Link,
    Listable,
    PhotoView,
    RenditionLink,
    SealedPhotoView,
)
from shared.facts import PhotoFacts
from shared.store import PageRow, PhotoRecord, PhotoStatus


@dataclass(frozen=True)
class Exposure:
    """What a view may link to: members see everything, share links less."""

    renditions: frozenset[str] | None = None  # None: every rendition
    original: bool = True


EVERYTHING = Exposure()
_READY = PhotoStatus.READY


def link_exposure(allow_download: bool) -> Exposure:
    return Exposure(renditions=frozenset({"thumb", "preview"}), original=allow_download)


def shown_status(photo: PhotoRecord) -> Listable:
    # Deleted photos are never shown, so every status shown is a listable one.
    return cast(Listable, photo.status.value)


def download_name(filename: str, rendition: str, content_type: str | None) -> str:
    if rendition == "original":
        return filename
    stem = filename.rsplit(".", 1)[0] or "photo"
    return f"{stem}-{rendition}{_extension(content_type)}"


@lru_cache(maxsize=64)
def _extension(content_type: str | None) -> str:
    return mimetypes.guess_extension(content_type or "") or ""


def view_values(
    sign: Sign,
    photo: Mapping[str, Any],
    renditions: Iterable[Mapping[str, Any]],
    *,
    facts: Any,
    reveal_at: datetime | None,
    exposure: Exposure = EVERYTHING,
) -> dict[str, Any]:
    """What the view of `photo` (a record's fields by name) holds, as plain values in
    the field order of its model: `SealedPhotoView` while its album is sealed (nothing is
    signed then), else `PhotoView`, linking `renditions` (shown once ready). `facts` as
    the view shows them; `reveal_at`, its album's. The one place a view is decided: the
    models are built from these (`photo_view`), and a listing page is serialised from
    them as they are (`listing_body`)."""
    if photo["album_id"] is not None and reveal_at is not None and sealed(reveal_at):
        return {
            "id": photo["id"],
            "album_id": photo["album_id"],
            "owner_id": photo["owner_id"],
            "status": photo["status"],
            "sealed": True,
            "reveal_at": reveal_at,
            "created_at": photo["created_at"],
        }
    links: dict[str, dict[str, Any]] = {}
    original = None
    if photo["status"] == _READY:
        filename = photo["filename"]
        for r in renditions:
            name, content_type = r["name"], r["content_type"]
            if exposure.renditions is not None and name not in exposure.renditions:
                continue
            url, _ = sign(
                r["object_key"], content_type, download_name(filename, name, content_type)
            )
            links[name] = {
                "url": url,
                "width": r["width"],
                "height": r["height"],
                "content_type": content_type,
            }
        if exposure.original:
            url, _ = sign(photo["object_key"], photo["content_type"], filename, True)
            original = {"url": url}
    size = photo["size"]
    return {
        "id": photo["id"],
        "owner_id": photo["owner_id"],
        "album_id": photo["album_id"],
        "sealed": False,
        "status": photo["status"],
        "reason": photo["reason"],
        "reason_detail": photo["reason_detail"],
        "filename": photo["filename"],
        "content_type": photo["content_type"] or photo["declared_type"],
        "size": size if size is not None else photo["declared_size"],
        "width": photo["width"],
        "height": photo["height"],
        "facts": facts,
        "created_at": photo["created_at"],
        "renditions": links,
        "original": original,
    }


def photo_view(
    sign: Sign,
    photo: PhotoRecord,
    *,
    reveal_at: datetime | None = None,
    exposure: Exposure = EVERYTHING,
) -> AnyPhotoView:
    """The view of `photo` as its model (`view_values`).

    Built without validation (`model_construct`): every value comes from a record the
    store validated, and the response is the same model serialised."""
    fields = {**dict(photo), "status": shown_status(photo)}
    made = [dict(r) for r in photo.renditions]
    values = view_values(
        sign, fields, made, facts=photo.facts, reveal_at=reveal_at, exposure=exposure
    )
    if values["sealed"]:
        return SealedPhotoView.model_construct(**values)
    links = {n: RenditionLink.model_construct(**link) for n, link in values["renditions"].items()}
    original = values["original"] and Link.model_construct(**values["original"])
    return PhotoView.model_construct(**{**values, "renditions": links, "original": original})


@lru_cache(maxsize=4096)
def listed_facts(text: str | None) -> dict[str, Any] | None:
    """Stored facts (JSON text) as a view shows them: through `PhotoFacts`, so a fact
    added since they were stored shows its default and one removed is left out. Facts
    never change once stored, so the result is kept by the text (about 1 KB each)."""
    return None if text is None else PhotoFacts.model_validate_json(text).model_dump(mode="json")


def page_items(keys: Sequence[PageRow]) -> dict[str, tuple[Any, ...]]:
    """A listing page's items in order, by photo id: what each is kept by."""
    return {key["id"]: _item_key(key) for key in keys}


async def listing_body(
    window: Window,
    items: Mapping[str, tuple[Any, ...]],
    rows_of: Callable[[list[str]], Awaitable[Sequence[PageRow]]],
    next_cursor: str | None,
) -> bytes:
    """A `PhotoPage` of the owner's views of a listing page (`shared.listing`): `items`
    (`page_items`) in order, and `rows_of(ids)` for the rows of those not kept yet.
    Serialised by pydantic-core from `view_values` as the models would be (byte for byte:
    tests/test_listing_views.py compares them). Building 200 model objects a page and
    serialising through the models' union of view shapes (which converts each item to
    Python first) was 2-3 ms of a page.

    An item is a function of its row, whether its album is sealed now, and the window's
    URLs, so it is built once per window and row version: building and serialising the
    views of a page of 50 was a quarter of its CPU. A row read after its key (changed
    meanwhile) is shown as it is now; one deleted meanwhile is left out."""
    derived = window.derived
    fresh: dict[str, bytes] = {}
    if missing := [photo_id for photo_id, key in items.items() if key not in derived]:
        for row in await rows_of(missing):
            item = fresh[row["id"]] = to_json(_listed(window.sign, row))
            derived[_item_key(row)] = item
    made = [fresh.get(photo_id) or derived.get(key) for photo_id, key in items.items()]
    body = b",".join(item for item in made if item is not None)
    return b'{"items":[%b],"next_cursor":%b}' % (body, to_json(next_cursor))


def listing_etag(
    window: Window, items: Mapping[str, tuple[Any, ...]], next_cursor: str | None
) -> str:
    """A strong ETag of the page `listing_body` makes of these items: each is a function
    of its key and the window's URLs, so the page is the same bytes while these are
    (from any replica), and a new window makes a new tag."""
    named = (window.tag, next_cursor, list(items.values()))
    digest = hashlib.blake2b(repr(named).encode(), digest_size=16).hexdigest()
    return f'"{digest}"'


def _item_key(row: PageRow) -> tuple[Any, ...]:
    reveal_at = row["reveal_at"]
    sealed_now = reveal_at is not None and sealed(reveal_at)
    return ("owner's listing item", row["id"], row["version"], reveal_at, sealed_now)


def _listed(sign: Sign, row: PageRow) -> dict[str, Any]:
    renditions = from_json(row["renditions"]) if row["renditions"] else ()
    facts = listed_facts(row["facts"])
    return view_values(sign, row, renditions, facts=facts, reveal_at=row["reveal_at"])


async def view_of(
    request: web.Request, photo: PhotoRecord, exposure: Exposure = EVERYTHING
) -> AnyPhotoView:
    [view] = await views_of(request, [photo], exposure)
    return view


async def views_of(
    request: web.Request, photos: Sequence[PhotoRecord], exposure: Exposure = EVERYTHING
) -> list[AnyPhotoView]:
    """Views of a page of photos: one query for their albums' reveal times (if any are
    in one), so a page costs the same number of queries whatever its length."""
    res = request.app[RESOURCES]
    reveals = await res.albums.reveal_times({p.album_id for p in photos if p.album_id})
    sign = await request.app[DOWNLOADS].signer()
    return [
        photo_view(sign, p, reveal_at=reveals.get(p.album_id or ""), exposure=exposure)
        for p in photos
    ]
