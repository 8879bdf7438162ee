"""Camera RAW files through LibRaw (rawpy): the embedded preview when it is big enough, else a
half-size demosaic of the sensor data.

A RAW file is a sensor mosaic plus, nearly always, a JPEG the camera rendered from it (often
full size, sometimes a quarter or a 160 px thumbnail). The preview is what the camera showed and
costs a JPEG decode, shrunk while decoding; demosaicing costs seconds of CPU for a 24 MP sensor.
So the preview is used whenever its longer side covers the largest thumbnail, and the sensor
data is developed (half size: each 2 x 2 Bayer block becomes one pixel, no interpolation) only
when there is no usable preview.

Previews are stored the way the sensor lies; many carry no EXIF orientation of their own, so
the RAW's orientation (LibRaw's `flip`) is applied to them (what immich #12720 missed), unless
the preview states its own or is visibly upright already (portrait from a landscape sensor).
LibRaw itself puts an EXIF block stating the RAW's orientation in front of a preview whose
first segment is not EXIF, so "its own" orientation is often LibRaw's: applied once either way.
The demosaic comes out upright from LibRaw. When the sensor data cannot be decoded, a preview
too small for the thumbnails is still better than nothing.

develop() is pure and runs in a worker process. LibRaw reports problems by printing to stderr
(C stdio, under Python's feet), so its file descriptor 2 is pointed at a temporary file while
LibRaw works; what it said goes into the failure's reason instead of the daemon's log.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import struct
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO

import numpy as np
import rawpy
from PIL import ExifTags, Image, TiffImagePlugin

from thumbd.render import formats, icc, sizing
from thumbd.render.decoders import Decoded, jpeg, largest_side
from thumbd.render.source import Refused
from thumbd.render.spec import FailKind, Failure, RenderSpec

RAW_EXTENSIONS = formats.RAW_EXTENSIONS

# The preview is decoded shrunk (JPEG DCT scaling) to this many times the largest thumbnail,
# as the JPEG decoder drafts (decoders/jpeg.py says why 1.8), so LANCZOS still has real pixels.
_DRAFT_MARGIN = jpeg.DRAFT_MARGIN
# EXIF InteropIndex "R03": the picture is Adobe RGB (DCF's option file); "R98" is sRGB.
_INTEROP_ADOBE = "R03"
# LibRaw's flip (dcraw's bits: 1 mirror left-right, 2 mirror top-bottom, 4 swap axes) as the
# EXIF orientation that describes the same stored picture.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
# How to make a stored picture upright, by EXIF orientation (as ImageOps.exif_transpose does).
_UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_CORRUPT = "corrupt RAW preview"
# Pillow errors of a broken preview JPEG (it decodes lazily: load() raises them).
_PILLOW_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


@dataclass(frozen=True)
class RawPicture:
    """A developed RAW: an upright RGB picture, the ICC profile its pixels are in (None: sRGB),
    and facts for the index and the log."""

    image: Image.Image
    profile: bytes | None
    facts: dict[str, object]


class RawRefused(Exception):
    """The RAW file cannot be shown: the failure, with a reason a person understands."""

    def __init__(self, kind: FailKind, reason: str) -> None:
        super().__init__(reason)
        self.failure = Failure(kind, reason)


def decode(f: IO[bytes], spec: RenderSpec) -> Decoded:
    """The decoder interface (render/decoders): the developed picture, upright, with its
    profile and facts for the index."""
    try:
        picture = develop(
            f,  # type: ignore[arg-type]
            largest=largest_side(spec),
            max_pixels=spec.max_pixels,
            largest_for=functools.partial(_longest_thumbnail_side, spec=spec),
        )
    except RawRefused as e:
        raise Refused(e.failure.kind, e.failure.reason) from None
    return Decoded(picture.image, profile=picture.profile, facts=picture.facts)


def _longest_thumbnail_side(upright: tuple[int, int], spec: RenderSpec) -> int:
    return max(max(t.size) for t in sizing.targets(upright, spec.widths, spec.sizes))


def develop(
    f: BinaryIO | str,
    *,
    largest: int,
    max_pixels: int,
    largest_for: Callable[[tuple[int, int]], int] | None = None,
) -> RawPicture:
    """The picture in RAW file `f` (a path or a binary file), for thumbnails whose longest side
    is at most `largest` px. A preview or sensor over `max_pixels` is never decoded."""
    with _libraw_quiet() as said, _opened(f, said) as raw:
        sizes = raw.sizes
        orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
        width, height = sizes.width, sizes.height
        if orientation in _SWAPS_AXES:
            width, height = height, width
        facts: dict[str, object] = {
            "kind": "raw",
            "camera": _tiff_camera(_head(f)),
            "raw_size": [width, height],
        }
        landscape = sizes.width >= sizes.height
        wanted = _Wanted(orientation, landscape, largest, max_pixels, largest_for)
        preview, why_not = _preview(raw, wanted)
        if preview is not None and not why_not:
            return _from_preview(preview, facts)
        try:
            image = _demosaic(raw, said, width * height, max_pixels, why_not)
        except RawRefused as e:
            if preview is None or e.failure.kind is FailKind.TOO_LARGE:
                raise
            return _from_preview(preview, facts)  # small, but better than nothing
        facts["from"] = "demosaic"
        return RawPicture(image, None, facts)


def _from_preview(preview: Preview, facts: dict[str, object]) -> RawPicture:
    image, profile = preview
    facts["from"] = "preview"
    if facts["camera"] is None:
        facts["camera"] = _exif_camera(image)
    return RawPicture(_plain(image), profile, facts)


# ---------------------------------------------------------------------------------------------
# LibRaw


@contextlib.contextmanager
def _libraw_quiet() -> Iterator[IO[bytes]]:
    """Point fd 2 at a temporary file for the block; yields that file (what LibRaw printed).

    A process-wide redirect, which is fine in a worker that renders one file at a time. Python's
    own sys.stderr writes go there too for the moment, and are flushed first so none are lost.
    A memory file, not one in /tmp: a confined worker may create no file.
    """
    with os.fdopen(os.memfd_create("libraw-stderr", os.MFD_CLOEXEC), "w+b") as said:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(said.fileno(), 2)
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _printed(said: IO[bytes]) -> str:
    """The first thing LibRaw printed (one line, bounded, without the file name it starts
    with: "<path>: Unexpected end of file"), or ""."""
    said.seek(0)
    text = said.read(4096).decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    name, sep, message = lines[0].rpartition(": ")
    return (message if sep and ("/" in name or "." in name) else lines[0])[:200]


@contextlib.contextmanager
def _opened(f: BinaryIO | str, said: IO[bytes]) -> Iterator[rawpy.RawPy]:
    try:
        raw = rawpy.imread(f)
    except rawpy.LibRawFileUnsupportedError as e:
        raise _unsupported(f) from e
    except (rawpy.LibRawError, OSError) as e:
        kind, detail = _libraw_failure(e, said)
        raise RawRefused(kind, f"cannot open RAW file: {detail}") from e
    with raw:
        yield raw


def _libraw_failure(e: BaseException, said: IO[bytes]) -> tuple[FailKind, str]:
    """The kind of what LibRaw raised, and what it said (printed, or else the exception)."""
    detail = _printed(said) or str(e) or type(e).__name__
    if isinstance(e, MemoryError | rawpy.LibRawUnsufficientMemoryError):
        return FailKind.OUT_OF_MEMORY, f"out of memory ({detail})"
    if isinstance(e, rawpy.LibRawTooBigError):
        return FailKind.TOO_LARGE, f"too large ({detail})"
    if isinstance(e, rawpy.LibRawIOError | EOFError):
        return FailKind.TRUNCATED, f"the file is truncated ({detail})"
    return FailKind.UNDECODABLE, detail


def _demosaic(
    raw: rawpy.RawPy, said: IO[bytes], pixels: int, max_pixels: int, why_not_preview: str
) -> Image.Image:
    """The sensor data at half size, with the camera's white balance, in sRGB, upright."""
    if pixels == 0:
        raise RawRefused(FailKind.UNDECODABLE, "RAW file has no image data")
    if pixels > max_pixels:
        raise RawRefused(
            FailKind.TOO_LARGE, f"too large: {pixels} pixels exceeds max_pixels {max_pixels}"
        )
    try:
        raw.unpack()
        developed = raw.postprocess(
            half_size=True,
            use_camera_wb=True,
            output_bps=8,
            output_color=rawpy.ColorSpace.sRGB,
        )
    except (rawpy.LibRawError, MemoryError, ValueError) as e:
        kind, detail = _libraw_failure(e, said)
        if why_not_preview.startswith(_CORRUPT):
            problem = why_not_preview.removeprefix(_CORRUPT).strip(": ")
            reason = f"{_CORRUPT} and the sensor data cannot be decoded: {detail}"
            reason += f" (the preview: {problem})" if problem else ""
        else:
            reason = f"cannot decode the RAW sensor data ({why_not_preview}): {detail}"
        raise RawRefused(kind, reason) from e
    if developed.ndim != 3 or developed.shape[2] != 3 or developed.size == 0:
        raise RawRefused(FailKind.UNDECODABLE, "RAW file has no image data")
    return Image.fromarray(np.ascontiguousarray(developed), "RGB")


# ---------------------------------------------------------------------------------------------
# The embedded preview


Preview = tuple[Image.Image, bytes | None]


@dataclass(frozen=True, slots=True)
class _Wanted:
    orientation: int  # the RAW's, as EXIF numbers it
    landscape: bool  # the sensor's stored shape
    largest: int
    max_pixels: int
    # The longest side of the largest thumbnail of a picture of that upright size, when known:
    # what the draft needs (else `largest`, which allows for either aspect).
    largest_for: Callable[[tuple[int, int]], int] | None = None

    def draft_side(self, stored: tuple[int, int], turned: bool) -> int:
        if self.largest_for is None:
            return self.largest
        return self.largest_for((stored[1], stored[0]) if turned else stored)


def _preview(raw: rawpy.RawPy, wanted: _Wanted) -> tuple[Preview | None, str]:
    """(upright preview and its profile, "") or (None, why it is not used)."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None, "no preview"
    except (rawpy.LibRawError, MemoryError) as e:
        return None, f"{_CORRUPT}: {type(e).__name__}"
    if thumb.format == rawpy.ThumbFormat.BITMAP and isinstance(thumb.data, np.ndarray):
        bitmap = thumb.data
        if bitmap.ndim != 3 or bitmap.shape[2] != 3 or bitmap.dtype != np.uint8:
            return None, "no preview LibRaw can give as 8-bit RGB"
        image = _upright(Image.fromarray(np.ascontiguousarray(bitmap), "RGB"), wanted, 1)
        return (image, None), "" if max(image.size) >= wanted.largest else "preview too small"
    if not isinstance(thumb.data, bytes):
        return None, "no preview"
    return _jpeg_preview(thumb.data, wanted)


def _jpeg_preview(data: bytes, wanted: _Wanted) -> tuple[Preview | None, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=("JPEG", "MPO"))
            big_enough = max(im.size) >= wanted.largest  # the stored size, before drafting
            if im.width * im.height > wanted.max_pixels:
                return None, "preview over max_pixels"
            profile = _preview_profile(im)
            own = _exif_orientation(im)
            turned = (own if own > 1 else wanted.orientation) in _SWAPS_AXES
            im.draft("RGB", _draft_size(im.size, wanted.draft_side(im.size, turned)))
            im.load()
    except _PILLOW_ERRORS as e:
        return None, f"{_CORRUPT}: {e}"
    # A grey or CMYK preview is not what cameras write; taken as it is, in RGB.
    picture = im if im.mode == "RGB" else im.convert("RGB")
    return (_upright(picture, wanted, own), profile), "" if big_enough else "preview too small"


def _draft_size(size: tuple[int, int], largest: int) -> tuple[int, int]:
    """The size to ask Image.draft for: the longer side near _DRAFT_MARGIN x `largest`."""
    scale = min(1.0, _DRAFT_MARGIN * largest / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _preview_profile(im: Image.Image) -> bytes | None:
    """Adobe RGB when the preview says so (an embedded profile, or DCF's "R03"); else sRGB."""
    embedded = im.info.get("icc_profile")
    if isinstance(embedded, bytes) and embedded:
        return embedded  # the caller's colour step checks it and skips sRGB ones
    try:
        interop = im.getexif().get_ifd(ExifTags.IFD.Interop)
    except _PILLOW_ERRORS:
        return None
    index = interop.get(ExifTags.Interop.InteropIndex)
    if isinstance(index, bytes):
        index = index.decode("ascii", "replace")
    if isinstance(index, str) and index.strip("\0 ") == _INTEROP_ADOBE:
        return icc.adobe_rgb()
    return None


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except _PILLOW_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(im: Image.Image, wanted: _Wanted, own: int) -> Image.Image:
    """The preview turned upright: by its own EXIF orientation when it has one, else by the
    RAW's; but not a preview whose shape is already the upright one (portrait from a landscape
    sensor turned a quarter): some cameras store previews turned, and LibRaw gives a JPEG
    preview that has no EXIF one that states the RAW's orientation."""
    orientation = own if own != 1 else wanted.orientation
    if orientation in _SWAPS_AXES and (im.width >= im.height) != wanted.landscape:
        orientation = 1
    transpose = _UPRIGHT.get(orientation)
    return im if transpose is None else im.transpose(transpose)


def _plain(im: Image.Image) -> Image.Image:
    """Pixels only: the preview's EXIF and profile are facts of this result, not of the image."""
    im.info.pop("exif", None)
    im.info.pop("icc_profile", None)
    return im


# ---------------------------------------------------------------------------------------------
# The camera, for the facts


def _head(f: BinaryIO | str) -> bytes:
    """The file's first 64 KiB (its TIFF directories, if it is TIFF inside), or b""."""
    try:
        if isinstance(f, str):
            with open(f, "rb") as fh:
                return fh.read(1 << 16)
        at = f.tell()
        f.seek(0)
        head = f.read(1 << 16)
        f.seek(at)
        return head
    except (OSError, ValueError):
        return b""


def _ifd0(head: bytes) -> TiffImagePlugin.ImageFileDirectory_v2 | None:
    """The first TIFF directory (DNG, CR2, NEF, ARW, ORF, RW2, PEF ... are TIFF inside), or
    None (CR3, RAF, X3F are not)."""
    # ORF ("IIRO", "IIRS") and RW2 ("IIU\0") are little-endian TIFF with their own magic.
    if head[:2] not in (b"II", b"MM") or len(head) < 8:
        return None
    prefix = b"II*\0" if head[:2] == b"II" else b"MM\0*"
    offset = int.from_bytes(head[4:8], "little" if head[:2] == b"II" else "big")
    try:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix + head[4:8])
        stream = io.BytesIO(head)
        stream.seek(offset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a truncated directory only tells less
            ifd.load(stream)
    except (*_PILLOW_ERRORS, KeyError, IndexError, TypeError, struct.error):
        return None
    return ifd


def _tiff_camera(head: bytes) -> str | None:
    ifd = _ifd0(head)
    return None if ifd is None else _join_camera(ifd.get(271), ifd.get(272))


# Strips, tiles, a JPEG thumbnail, SubIFDs: where a TIFF directory can point at pixels.
_IMAGE_DATA_TAGS = (273, 324, 513, 330)
_DNG_VERSION = 50706


def _unsupported(f: BinaryIO | str) -> RawRefused:
    """Why LibRaw does not take a file: no pixels at all (a RAW's tags only, as exiftool's
    test images are), a camera it does not know, or not a RAW file."""
    ifd = _ifd0(_head(f))
    camera = None if ifd is None else _join_camera(ifd.get(271), ifd.get(272))
    if ifd is not None and (camera or _DNG_VERSION in ifd):
        if not any(tag in ifd for tag in _IMAGE_DATA_TAGS):
            return RawRefused(FailKind.UNDECODABLE, "RAW file has no image data")
        return RawRefused(
            FailKind.UNSUPPORTED,
            f"unsupported RAW file: LibRaw cannot read this camera's format ({camera or 'DNG'})",
        )
    return RawRefused(
        FailKind.UNIDENTIFIED, "not a RAW file LibRaw can read (unknown camera or format)"
    )


def _exif_camera(im: Image.Image) -> str | None:
    try:
        exif = im.getexif()
    except _PILLOW_ERRORS:
        return None
    return _join_camera(exif.get(ExifTags.Base.Make), exif.get(ExifTags.Base.Model))


def _join_camera(make: object, model: object) -> str | None:
    """ "Make Model", without the make twice ("Canon" + "Canon EOS R5" is "Canon EOS R5")."""
    parts = [str(v).strip("\0 ") for v in (make, model) if isinstance(v, str)]
    parts = [p for p in parts if p]
    if len(parts) == 2 and parts[1].lower().startswith(parts[0].lower()):
        parts = parts[1:]
    return " ".join(parts) or None
