"""The index written beside the thumbnails: `<stem>.json`, for web pages that show them.

It tells a page everything it needs before any thumbnail loads: the source's size, each
thumbnail's file, size and bytes, a dominant colour for a plain placeholder and a ThumbHash
(about 25 bytes, base64) for a blurred one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from thumbd.render import thumbhash

_HASH_SIDE = 32  # a 7x7 DCT needs no more pixels than this; 100 (the maximum) costs 10x
_COLOUR_SIDE = 48
_PALETTE = 8


@dataclass(frozen=True, slots=True)
class Entry:
    file: str
    name: str
    size: tuple[int, int]
    bytes: int
    frames: int = 1


def index_json(
    source_name: str,
    source_size: tuple[int, int],
    entries: list[Entry],
    picture: Image.Image,
    facts: Mapping[str, object] | None = None,
) -> bytes:
    """The index as UTF-8 JSON. `picture` is the upright, sRGB image at any size; `facts` (a
    decoder's: a video's duration, say) join the source's entry, never replacing its file or
    size."""
    small = picture.convert("RGBA")
    small.thumbnail((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX)
    index = {
        "source": {
            **(facts or {}),
            "file": source_name,
            "width": source_size[0],
            "height": source_size[1],
        },
        "thumbnails": [_entry(e) for e in entries],
        "dominant_colour": dominant_colour(picture),
        "thumbhash": base64.b64encode(thumbhash.encode(*small.size, small.tobytes())).decode(),
    }
    return (json.dumps(index, indent=2) + "\n").encode()


def with_files(index: bytes, files: list[str]) -> bytes:
    """The index with its thumbnails' `file`s replaced, in order: the daemon names a source's
    thumbnails after its whole file name when a sibling has the plain names (thumbd.names)."""
    data = json.loads(index)
    for entry, file in zip(data["thumbnails"], files, strict=True):
        entry["file"] = file
    return (json.dumps(data, indent=2) + "\n").encode()


def with_motion(index: bytes, motion: str) -> bytes:
    """The index of a Live Photo's still, naming its motion file (beside it in incoming/)."""
    data = json.loads(index)
    data["source"]["motion"] = motion
    return (json.dumps(data, indent=2) + "\n").encode()


def _entry(e: Entry) -> dict[str, object]:
    entry: dict[str, object] = {
        "file": e.file,
        "name": e.name,
        "width": e.size[0],
        "height": e.size[1],
        "bytes": e.bytes,
    }
    if e.frames > 1:
        entry["frames"] = e.frames
    return entry


def dominant_colour(picture: Image.Image) -> str:
    """The most common colour after reducing to a few (`#rrggbb`), ignoring transparent pixels."""
    small = picture.convert("RGBA")
    small.thumbnail((_COLOUR_SIDE, _COLOUR_SIDE), Image.Resampling.BOX)
    data = small.tobytes()
    visible = b"".join(data[i : i + 3] for i in range(0, len(data), 4) if data[i + 3] >= 128)
    if not visible:
        return "#000000"
    strip = Image.frombytes("RGB", (len(visible) // 3, 1), visible)
    reduced = strip.quantize(_PALETTE, method=Image.Quantize.MEDIANCUT)
    palette = reduced.getpalette() or []
    counts = reduced.getcolors() or []
    index = max(counts, key=lambda c: c[0])[1] if counts else 0
    assert isinstance(index, int)  # a palette image's colours are indices
    r, g, b = palette[index * 3 : index * 3 + 3]
    return f"#{r:02x}{g:02x}{b:02x}"
