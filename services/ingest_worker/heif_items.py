"""Where a HEIF/AVIF file keeps its metadata items (EXIF, XMP): extents inside `mdat`,
found through the `meta` box's item information (`iinf`) and item locations (`iloc`).
Only the structure is parsed; image items are never looked at."""

from __future__ import annotations

# Item types that carry metadata rather than pixels.
METADATA_ITEMS = {b"Exif", b"mime", b"uri "}
# A meta box larger than this is not parsed for items (real ones are a few KiB).
MAX_META = 4 * 1024 * 1024


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of the boxes laid end to end in `data`."""
    found, at = [], 0
    while at + 8 <= len(data):
        size, kind, used = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8], 8
        if size == 1:
            size, used = int.from_bytes(data[at + 8 : at + 16], "big"), 16
        elif size == 0:
            size = len(data) - at
        if size < used or at + size > len(data):
            break
        found.append((kind, data[at + used : at + size]))
        at += size
    return found


def _uint(data: bytes, at: int, size: int) -> tuple[int, int]:
    if at + size > len(data):
        raise ValueError("box ends early")
    return int.from_bytes(data[at : at + size], "big"), at + size


def _metadata_item_ids(iinf: bytes) -> set[int]:
    version = iinf[0] if iinf else 0
    at = 4 + (2 if version == 0 else 4)
    ids = set()
    for kind, infe in _boxes(iinf[at:]):
        if kind != b"infe" or len(infe) < 4 or infe[0] < 2:
            continue
        id_size = 2 if infe[0] == 2 else 4
        item_id, at_type = _uint(infe, 4, id_size)
        item_type = infe[at_type + 2 : at_type + 6]
        if item_type in METADATA_ITEMS:
            ids.add(item_id)
    return ids


def _extents(iloc: bytes, wanted: set[int]) -> list[tuple[int, int]]:
    version = iloc[0]
    offset_size, length_size = iloc[4] >> 4, iloc[4] & 15
    base_size, index_size = iloc[5] >> 4, (iloc[5] & 15) if version in (1, 2) else 0
    count, at = _uint(iloc, 6, 2 if version < 2 else 4)
    extents = []
    for _ in range(count):
        item_id, at = _uint(iloc, at, 2 if version < 2 else 4)
        method = 0
        if version in (1, 2):
            method, at = _uint(iloc, at, 2)
            method &= 15
        at += 2  # data reference index
        base, at = _uint(iloc, at, base_size)
        extent_count, at = _uint(iloc, at, 2)
        for _ in range(extent_count):
            at += index_size
            offset, at = _uint(iloc, at, offset_size)
            length, at = _uint(iloc, at, length_size)
            # Method 1 is the meta box's own idat, scanned with it; 2 points at items.
            if item_id in wanted and method == 0 and length:
                extents.append((base + offset, length))
    return extents


def metadata_extents(meta: bytes) -> list[tuple[int, int]]:
    """(file offset, length) of every metadata item's data, from a `meta` box's payload
    (after its version and flags); [] when the structure does not parse."""
    children = dict(_boxes(meta[4:]))
    if b"iinf" not in children or b"iloc" not in children:
        return []
    try:
        wanted = _metadata_item_ids(children[b"iinf"])
        return _extents(children[b"iloc"], wanted) if wanted else []
    except (ValueError, IndexError):
        return []
