"""Apple's content identifier: the UUID an iPhone writes into both halves of a Live Photo, in
the still's maker notes (EXIF 0x927C, Apple's IFD, tag 0x0011) and in the motion file's
QuickTime metadata (`com.apple.quicktime.content.identifier`), so that the two can be paired
whatever their names (intake/live.py).

Pillow hands the maker notes over as bytes and knows no Apple layout; the layout is small (a
"Apple iOS" header, then a big-endian TIFF IFD whose offsets count from the header's start), so
the one tag is read here rather than through a metadata library.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping

from PIL import Image

_HEADER = b"Apple iOS\x00"
_MAKER_NOTE = 0x927C
_CONTENT_IDENTIFIER = 0x0011
_ASCII = 2
QUICKTIME_KEY = "com.apple.quicktime.content.identifier"


def facts(im: Image.Image) -> dict[str, object]:
    """`{"content_id": ...}` for a JPEG or HEIF still that carries one, else nothing (and no
    EXIF parsed for other formats)."""
    if im.format not in ("JPEG", "MPO", "HEIF") and "exif" not in im.info:
        return {}
    found = from_exif(im.getexif())
    return {} if found is None else {"content_id": found}


def from_exif(exif: Image.Exif) -> str | None:
    """The content identifier in the maker notes of `exif`, or None."""
    try:
        notes = exif.get_ifd(0x8769).get(_MAKER_NOTE)
    except (KeyError, ValueError, struct.error, SyntaxError):  # damaged EXIF: no identifier
        return None
    return from_maker_notes(notes) if isinstance(notes, bytes) else None


def from_maker_notes(notes: bytes) -> str | None:
    """Tag 0x0011 of Apple's maker notes, when it is a UUID; None for anything else."""
    if not notes.startswith(_HEADER) or notes[12:14] != b"MM" or len(notes) < 16:
        return None
    (count,) = struct.unpack_from(">H", notes, 14)
    for n in range(count):
        at = 16 + 12 * n
        if at + 12 > len(notes):
            return None
        tag, kind, length, value = struct.unpack_from(">HHI4s", notes, at)
        if tag == _CONTENT_IDENTIFIER and kind == _ASCII:
            if length > 4:
                (offset,) = struct.unpack(">I", value)
                value = notes[offset : offset + length]
            return _uuid(value[:length].rstrip(b"\x00").decode("ascii", "replace"))
    return None


def from_metadata(metadata: Mapping[str, str]) -> str | None:
    """The content identifier in a video container's metadata (as PyAV gives it), or None."""
    return _uuid(metadata.get(QUICKTIME_KEY, ""))


def _uuid(text: str) -> str | None:
    """`text` as a canonical upper-case UUID, or None: only a well-formed one pairs files."""
    try:
        return str(uuid.UUID(text.strip())).upper()
    except ValueError:
        return None
