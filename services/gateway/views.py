"""Photo records as the API shows them: the view model, with download links once ready."""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from typing import cast

from aiohttp import web

from services.gateway.context import DOWNLOADS, RESOURCES
from services.gateway.downloads import Downloads
from services.gateway.models import Link, Listable, PhotoView, RenditionLink
from shared.store import PhotoRecord, PhotoStatus, RenditionRecord


def shown_status(photo: PhotoRecord) -> Listable:
    # Deleted photos are never shown, so every status shown is a listable one.
    return cast(Listable, photo.status.value)


def download_name(photo: PhotoRecord, rendition: str, content_type: str | None) -> str:
    if rendition == "original":
        return photo.filename
    stem = photo.filename.rsplit(".", 1)[0] or "photo"
    return f"{stem}-{rendition}{mimetypes.guess_extension(content_type or '') or ''}"


async def photo_view(
    downloads: Downloads, photo: PhotoRecord, renditions: Sequence[RenditionRecord]
) -> PhotoView:
    """The view of `photo`; `renditions` are its recorded renditions (shown once ready)."""
    links: dict[str, RenditionLink] = {}
    original = None
    if photo.status is PhotoStatus.READY:
        for r in renditions:
            name = download_name(photo, r.name, r.content_type)
            url, _ = await downloads.url(r.object_key, r.content_type, name)
            links[r.name] = RenditionLink(
                url=url, width=r.width, height=r.height, content_type=r.content_type
            )
        name = download_name(photo, "original", photo.content_type)
        url, _ = await downloads.url(photo.object_key, photo.content_type, name, attachment=True)
        original = Link(url=url)
    return PhotoView(
        id=photo.id,
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


async def view_of(request: web.Request, photo: PhotoRecord) -> PhotoView:
    res = request.app[RESOURCES]
    ready = photo.status is PhotoStatus.READY
    renditions = await res.store.renditions(photo.id) if ready else []
    return await photo_view(request.app[DOWNLOADS], photo, renditions)


async def views_of(request: web.Request, photos: Sequence[PhotoRecord]) -> list[PhotoView]:
    """Views of a page of photos: one renditions query for all of them, so a page costs
    the same number of queries whatever its length."""
    ready = [p.id for p in photos if p.status is PhotoStatus.READY]
    found = await request.app[RESOURCES].store.renditions_for(ready)
    downloads = request.app[DOWNLOADS]
    return [await photo_view(downloads, p, found.get(p.id, [])) for p in photos]
