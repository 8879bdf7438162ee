"""HEIC files made for the tests: a primary image and an embedded thumbnail with its own pixels.

pillow-heif's public API only makes a thumbnail by shrinking the primary image. Its encoder
context can encode one from any picture (that is how it writes grid images), so a test can make
the thumbnail visibly different (another colour, bars, another shape, another rotation) and
prove which one a render used. `thumbnail_extent()` finds the thumbnail's coded bytes in the
file (ISO-BMFF `iref`/`iloc`), for a test that corrupts them.
"""

from __future__ import annotations

import io
import struct

from PIL import Image
from pillow_heif import misc
from pillow_heif.constants import HeifCompressionFormat

TILE = 512  # grid tiles, as iPhones write them


def heic(
    primary: Image.Image,
    thumbnail_from: Image.Image | None,
    box: int = 320,
    *,
    orientation: int = 1,
    thumbnail_orientation: int | None = None,
    primaries: int = 1,
    exif: bytes | None = None,
) -> bytes:
    """A HEIC (grid-coded, like a phone's) of `primary`, and a thumbnail fitting `box` x `box`
    shrunk from `thumbnail_from` (which must be larger than `box`); stored with the HEIF
    rotation/mirroring of the EXIF `orientation` values given (the thumbnail's defaults to the
    primary's). The primary's colour is an nclx box with H.273 `primaries` (1: sRGB's, 9:
    BT.2020) and the sRGB curve; the thumbnail has no colour box (libheif writes none)."""
    ctx = misc.CtxEncode(HeifCompressionFormat.HEVC, quality=90)
    ctx._add_image_grid(
        primary.size,
        "RGB",
        primary.convert("RGB").tobytes(),
        TILE,
        primary=True,
        image_orientation=orientation,
        thumbnails=[],
        color_primaries=primaries,
        transfer_characteristics=13,
        matrix_coefficients=6,
        full_range_flag=1,
        exif=exif,
    )
    if thumbnail_from is not None:
        grid = ctx._grid_images[-1]
        source = thumbnail_from.convert("RGB")
        _, _, colorspace, chroma = misc.MODE_INFO["RGB"]
        pixels = ctx.ctx_write.create_image(source.size, colorspace, chroma, 0)
        misc._add_planes(pixels, source.size, "RGB", source.tobytes(), 0, 8)
        turn = orientation if thumbnail_orientation is None else thumbnail_orientation
        grid.encode_thumbnail(ctx.ctx_write, box, turn, pixels)
    out = io.BytesIO()
    ctx.save(out)
    return out.getvalue()


def thumbnail_extent(data: bytes) -> tuple[int, int]:
    """(offset, length) in `data` of the first thumbnail's coded picture."""
    meta = _child(data, 0, len(data), b"meta")
    body = (meta[0] + 4, meta[1])  # a full box: version and flags first
    thumb_id = _thumbnail_item(data, *_child(data, *body, b"iref"))
    return _extent(data, *_child(data, *body, b"iloc"), thumb_id)


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    found, at = [], start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        size = size or end - at
        found.append((kind, at + header, at + size))
        at += size
    return found


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    return next((s, e) for k, s, e in _boxes(data, start, end) if k == kind)


def _thumbnail_item(data: bytes, start: int, end: int) -> int:
    version = data[start]
    for kind, s, _ in _boxes(data, start + 4, end):
        if kind == b"thmb":
            return int(struct.unpack_from(">H" if version == 0 else ">I", data, s)[0])
    raise ValueError("no thumbnail reference")


def _extent(data: bytes, start: int, end: int, item: int) -> tuple[int, int]:
    version = data[start]
    at = start + 4
    offset_size, length_size = data[at] >> 4, data[at] & 15
    base_size, index_size = data[at + 1] >> 4, (data[at + 1] & 15 if version else 0)
    at += 2
    count, at = _uint(data, at, 2 if version < 2 else 4)
    for _ in range(count):
        item_id, at = _uint(data, at, 2 if version < 2 else 4)
        at += 2 if version else 0  # construction method
        at += 2  # data reference index
        base, at = _uint(data, at, base_size)
        extents, at = _uint(data, at, 2)
        for _ in range(extents):
            at += index_size
            offset, at = _uint(data, at, offset_size)
            length, at = _uint(data, at, length_size)
            if item_id == item:
                return base + offset, length
    raise ValueError(f"item {item} has no extent")


def _uint(data: bytes, at: int, size: int) -> tuple[int, int]:
    return int.from_bytes(data[at : at + size], "big"), at + size
