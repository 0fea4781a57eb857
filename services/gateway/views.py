"""Photo records as the API shows them: the view model, with download links once ready."""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from aiohttp import web

from services.gateway.access import sealed
from services.gateway.context import DOWNLOADS, RESOURCES
from services.gateway.downloads import Sign
from services.gateway.models import (
    AnyPhotoView,
    Link,
    Listable,
    PhotoView,
    RenditionLink,
    SealedPhotoView,
)
from shared.store import PhotoRecord, PhotoStatus, RenditionRecord


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


def download_name(photo: PhotoRecord, rendition: str, content_type: str | None) -> str:
    if rendition == "original":
        return photo.filename
    stem = photo.filename.rsplit(".", 1)[0] or "photo"
    return f"{stem}-{rendition}{mimetypes.guess_extension(content_type or '') or ''}"


def photo_view(
    sign: Sign,
    photo: PhotoRecord,
    renditions: Sequence[RenditionRecord],
    *,
    reveal_at: datetime | None = None,
    exposure: Exposure = EVERYTHING,
) -> AnyPhotoView:
    """The view of `photo`; `renditions` are its recorded renditions (shown once ready),
    `reveal_at` its album's. Sealed, it is the sealed view and nothing is signed.

    Built without validation (`model_construct`): every value comes from a record the
    store validated, and the response is the same model serialised."""
    if photo.album_id is not None and reveal_at is not None and sealed(reveal_at):
        return SealedPhotoView.model_construct(
            id=photo.id,
            album_id=photo.album_id,
            owner_id=photo.owner_id,
            sealed=True,
            status=shown_status(photo),
            reveal_at=reveal_at,
            created_at=photo.created_at,
        )
    links: dict[str, RenditionLink] = {}
    original = None
    if photo.status is PhotoStatus.READY:
        for r in renditions:
            if exposure.renditions is not None and r.name not in exposure.renditions:
                continue
            url, _ = sign(
                r.object_key, r.content_type, download_name(photo, r.name, r.content_type)
            )
            links[r.name] = RenditionLink.model_construct(
                url=url, width=r.width, height=r.height, content_type=r.content_type
            )
        if exposure.original:
            name = download_name(photo, "original", photo.content_type)
            original = Link.model_construct(
                url=sign(photo.object_key, photo.content_type, name, attachment=True)[0]
            )
    return PhotoView.model_construct(
        id=photo.id,
        owner_id=photo.owner_id,
        album_id=photo.album_id,
        sealed=False,
        status=shown_status(photo),
        reason=photo.reason,
        reason_detail=photo.reason_detail,
        filename=photo.filename,
        content_type=photo.content_type or photo.declared_type,
        size=photo.size if photo.size is not None else photo.declared_size,
        width=photo.width,
        height=photo.height,
        facts=photo.facts,
        created_at=photo.created_at,
        renditions=links,
        original=original,
    )


async def view_of(
    request: web.Request, photo: PhotoRecord, exposure: Exposure = EVERYTHING
) -> AnyPhotoView:
    [view] = await views_of(request, [photo], exposure)
    return view


async def views_of(
    request: web.Request,
    photos: Sequence[PhotoRecord],
    exposure: Exposure = EVERYTHING,
    found: Mapping[str, Sequence[RenditionRecord]] | None = None,
) -> list[AnyPhotoView]:
    """Views of a page of photos: one query for their albums' reveal times (if any are
    in one) and one for the renditions of those not sealed, unless `found` already has
    them, so a page costs the same number of queries whatever its length."""
    res = request.app[RESOURCES]
    reveals = await res.albums.reveal_times({p.album_id for p in photos if p.album_id})
    if found is None:
        shown = [p for p in photos if not sealed(reveals.get(p.album_id or ""))]
        found = await res.store.renditions_for([p.id for p in shown if p.status is _READY])
    sign = await request.app[DOWNLOADS].signer()
    return [
        photo_view(
            sign,
            p,
            found.get(p.id, []),
            reveal_at=reveals.get(p.album_id or ""),
            exposure=exposure,
        )
        for p in photos
    ]
