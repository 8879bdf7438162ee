"""Pillow rendering: decode once, orient, convert colour, make every width.

`render()` is pure and top level so that it pickles to a worker process: a source path in,
thumbnails as bytes out, no I/O besides reading the source. Everything that must survive a
crash (writing, recording) happens in the daemon process.

Bad input never raises: every failure is a `RenderResult` whose `error` a person understands.
Only bugs in this module raise.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import struct
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError, features

from thumbd import testhooks

Signature = tuple[int, int, int]  # (size, mtime_ns, inode)
Size = tuple[int, int]
Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class RenderSpec:
    """What to make of every source. Picklable; built from the configuration."""

    widths: tuple[int, ...] = (200, 64, 32)
    quality: int = 85
    max_pixels: int = 100_000_000


@dataclass(frozen=True, slots=True)
class Thumbnail:
    width: int  # the configured width this thumbnail is named after
    size: tuple[int, int]  # its real pixel size
    ext: str  # "jpg" or "png"
    data: bytes


@dataclass(frozen=True, slots=True)
class RenderResult:
    """The outcome of one render: thumbnails, or an error a person understands."""

    signature: Signature | None  # fstat of the file actually read
    source_size: tuple[int, int] | None  # upright pixel size of the source
    thumbnails: tuple[Thumbnail, ...] = ()
    error: str | None = None
    cpu_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _avif_available() -> bool:
    try:
        return features.check_module("avif")
    except ValueError:  # Pillow before 11.2 does not know the name at all
        return False


# The formats thumbd reads; Image.open tries no other decoder. Every extra format is extra
# attack surface (Pillow's FITS decompression bomb, GHSA-whj4-6x5x-4v2j, was reachable only
# through the default "try everything"). Extend with Pillow format names.
ALLOWED_FORMATS: tuple[str, ...] = (
    "JPEG",
    "PNG",
    "GIF",
    "WEBP",
    "TIFF",
    "BMP",
    "MPO",
    *(("AVIF",) if _avif_available() else ()),
)


def _openers() -> tuple[str, ...]:
    """ALLOWED_FORMATS that Pillow has an opener for, to pass to Image.open.

    Image.open raises KeyError (not "cannot identify") for a name without an opener. MPO has
    none: the JPEG opener returns MPO files. Checked per call, so a plugin registered later
    (e.g. pillow_heif's) counts; init() does the work only once.
    """
    Image.init()
    return tuple(name for name in ALLOWED_FORMATS if name in Image.OPEN)


# Formats whose decoder can shrink while decoding (JPEG DCT scaling by 1/2, 1/4, 1/8).
_DRAFTABLE = ("JPEG", "MPO")
# The draft asks for this many times the largest thumbnail, so LANCZOS still has real pixels
# to average: the result cannot be told from a full decode.
_DRAFT_MARGIN = 2
_REDUCING_GAP = 3.0
_PNG_COMPRESS_LEVEL = 6

# What Pillow raises for broken or hostile input, in its parsers and decoders. Image.open itself
# treats SyntaxError, IndexError, TypeError and struct.error as "not this format".
_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    RuntimeError,  # Pillow's AVIF decoder reports corrupt data this way
)

# How to make a stored image upright, by EXIF orientation (as ImageOps.exif_transpose does).
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


class _Refused(Exception):
    """The input cannot be rendered; `reason` is the message for the result."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Entry point


def render(path: str, spec: RenderSpec) -> RenderResult:
    """Read `path` once and make one thumbnail per width of `spec`, in the order of spec.widths."""
    started = time.process_time()
    signature: Signature | None = None
    try:
        with _open_source(path) as f:
            st = os.fstat(f.fileno())
            signature = (st.st_size, st.st_mtime_ns, st.st_ino)
            _check_file(st)
            testhooks.trip(f)
            source_size, thumbnails = _render_file(f, spec)
    except _Refused as refused:
        return RenderResult(
            signature=signature,
            source_size=None,
            error=refused.reason,
            cpu_seconds=time.process_time() - started,
        )
    return RenderResult(
        signature=signature,
        source_size=source_size,
        thumbnails=thumbnails,
        cpu_seconds=time.process_time() - started,
    )


def _nonblocking_opener(path: str, flags: int) -> int:
    # O_NONBLOCK: opening a FIFO that landed in the folder must not hang the worker forever
    # waiting for a writer. It changes nothing for regular files. O_NOFOLLOW: a source swapped
    # for a symlink (to /etc/shadow, say) after it was checked is refused, not read.
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW)


def _open_source(path: str) -> IO[bytes]:
    try:
        return open(path, "rb", opener=_nonblocking_opener)
    except FileNotFoundError as e:
        raise _Refused("file not found (deleted or renamed before it was read)") from e
    except PermissionError as e:
        raise _Refused("permission denied reading the file") from e
    except IsADirectoryError as e:
        raise _Refused("not a regular file (a directory)") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _Refused("a symbolic link (thumbd does not follow links)") from e
        raise _Refused(f"cannot open file: {e.strerror or e}") from e


def _check_file(st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _Refused("not a regular file")
    if st.st_size == 0:
        raise _Refused("empty file (0 bytes)")


# ---------------------------------------------------------------------------------------------
# Decoding


@contextmanager
def _input_errors_refused(max_pixels: int) -> Iterator[None]:
    """Turn what Pillow raises for bad files into _Refused; Pillow's bomb warning is an error.

    catch_warnings restores the filters on exit, so nothing global changes (it is not
    thread-safe, which is fine: workers are processes and render() runs one file at a time).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise _Refused(_too_large_for_pillow(e, max_pixels)) from e
        except UnidentifiedImageError as e:
            raise _Refused(
                "cannot identify image file (not one of: " + ", ".join(ALLOWED_FORMATS) + ")"
            ) from e
        except MemoryError as e:
            raise _Refused("out of memory decoding the image") from e
        except _INPUT_ERRORS as e:
            raise _Refused(_describe(e)) from e


_BOMB_MESSAGE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


def _too_large_for_pillow(e: Exception, max_pixels: int) -> str:
    """Pillow checks the size inside Image.open, before we see it: report it our way."""
    found = _BOMB_MESSAGE.search(str(e))
    if found is None:
        return f"too large: {e}"
    pixels, limit = int(found[1]), int(found[2])
    if pixels > max_pixels:
        return f"too large: {pixels} pixels exceeds max_pixels {max_pixels}"
    return f"too large: {pixels} pixels exceeds Pillow's decompression bomb limit {limit}"


def _describe(e: BaseException) -> str:
    text = str(e) if isinstance(e, OSError | SyntaxError) else f"{type(e).__name__}: {e}"
    lowered = text.lower()
    if isinstance(e, EOFError) or "truncated" in lowered:
        return "image file is truncated"
    if "not available" in lowered or "unsupported" in lowered or "unknown raw mode" in lowered:
        return f"unsupported format: {text}"
    return f"cannot decode image: {text}"


def _render_file(f: IO[bytes], spec: RenderSpec) -> tuple[Size, tuple[Thumbnail, ...]]:
    largest = max(spec.widths)  # out here: a bad spec is a bug to raise, not a bad file
    with _input_errors_refused(spec.max_pixels), Image.open(f, formats=_openers()) as im:
        stored_size = im.size
        _check_pixels(stored_size, spec.max_pixels)  # before anything can load pixels
        box = _draft(im, largest)
        im.load()
        # Read after load(): some decoders (TIFF in Pillow 13) apply the orientation
        # themselves while loading, report the upright size from open(), and drop the tag.
        orientation = _orientation(im)
    picture = _renderable(im)  # pixels are in memory now; closing the file does not matter
    source_size = _oriented(stored_size, orientation)
    targets = [_target_size(source_size, width) for width in spec.widths]
    thumbnails = _make_thumbnails(picture, box, orientation, spec, targets)
    return source_size, thumbnails


def _check_pixels(size: Size, max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise _Refused(f"too large: {w}x{h} pixels exceeds max_pixels {max_pixels}")


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) still to apply; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except _INPUT_ERRORS:
        return 1  # a broken EXIF block must not cost the picture
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _oriented(size: Size, orientation: int) -> Size:
    """`size` turned by `orientation` (works both ways: stored <-> upright)."""
    return (size[1], size[0]) if orientation in _SWAPS_AXES else size


def _target_size(source: Size, width: int) -> Size:
    """Thumbnail size for a configured width: aspect kept, never larger than the source."""
    sw, sh = source
    if sw <= width:
        return source
    return width, max(1, round(sh * width / sw))


def _draft(im: ImageFile.ImageFile, largest: int) -> Box | None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the thumbnails are that much smaller.

    Must run before any pixel access. Returns the source's box in the drafted image (draft
    rounds the size up), for an exact resize.
    """
    if im.format not in _DRAFTABLE:
        return None
    # JPEG decoders do not orient, so the tag read now is the one load() will leave.
    orientation = _orientation(im)
    upright = _oriented(im.size, orientation)
    tw = _target_size(upright, largest)[0]
    want = _DRAFT_MARGIN * tw, max(1, round(_DRAFT_MARGIN * tw * upright[1] / upright[0]))
    drafted = im.draft(None, _oriented(want, orientation))  # None: keep the decoded mode
    return drafted[1] if drafted is not None else None


# ---------------------------------------------------------------------------------------------
# Colour


def _renderable(im: Image.Image) -> Image.Image:
    """Convert to L, LA, RGB or RGBA: the modes LANCZOS resizes well and JPEG/PNG store."""
    mode = im.mode
    if "transparency" in im.info and mode in ("1", "L", "P", "RGB"):
        # A palette or colour-key transparency: make it a real alpha channel.
        return im.convert("LA" if mode in ("1", "L") else "RGBA")
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "CMYK", "YCbCr", "RGBX"):
        return im.convert("RGB")  # CMYK: plain conversion; the ICC profile is dropped anyway
    if mode in ("PA", "RGBa"):
        return im.convert("RGBA")
    if mode == "La":
        return im.convert("LA")
    if mode.startswith("I;16"):
        return _scale_to_l(im.convert("I"), 0, 65535)
    if mode == "I":
        return _int_to_l(im)
    if mode == "F":
        return _float_to_l(im)
    raise _Refused(f"unsupported format: image mode {mode}")


def _scale_to_l(im: Image.Image, lo: float, hi: float) -> Image.Image:
    """Map lo..hi linearly onto 0..255 (convert("L") alone would clip everything above 255)."""
    scale = 256 / (hi - lo + 1) if hi > lo else 1.0
    offset = -lo * scale
    return im.point(lambda v: v * scale + offset).convert("L")


def _int_to_l(im: Image.Image) -> Image.Image:
    lo, hi = _extrema(im)
    if lo >= 0 and hi <= 65535:
        return _scale_to_l(im, 0, 65535)  # 16-bit data in a 32-bit container: value/256
    return _scale_to_l(im, lo, hi)  # anything else: stretch what is there


def _float_to_l(im: Image.Image) -> Image.Image:
    lo, hi = _extrema(im)
    if lo >= 0 and hi <= 1.0:
        return im.point(lambda v: v * 255).convert("L")  # normalised 0..1 data
    return im.convert("L")  # treat as 0..255; convert clamps the rest


def _extrema(im: Image.Image) -> tuple[float, float]:
    lo, hi = im.getextrema()
    assert isinstance(lo, int | float) and isinstance(hi, int | float)  # one band
    return lo, hi


def _without_opaque_alpha(im: Image.Image) -> Image.Image:
    """Drop an alpha channel that is 255 everywhere, so the thumbnail can be a JPEG."""
    if im.mode not in ("LA", "RGBA"):
        return im
    lo, _ = _extrema(im.getchannel("A"))
    if lo < 255:
        return im
    return im.convert("L" if im.mode == "LA" else "RGB")


# ---------------------------------------------------------------------------------------------
# Sizes and encoding


def _make_thumbnails(
    picture: Image.Image,
    box: Box | None,
    orientation: int,
    spec: RenderSpec,
    targets: list[Size],
) -> tuple[Thumbnail, ...]:
    """Resize largest first, each from the previous one; turn upright only the small results.

    Resizing in the stored orientation and transposing the thumbnail afterwards is the same
    picture as transposing the full image first, at a fraction of the cost.
    """
    largest_first = sorted(range(len(targets)), key=lambda i: targets[i][0], reverse=True)
    made: dict[int, Thumbnail] = {}
    previous: Image.Image | None = None
    for i in largest_first:
        stored = _oriented(targets[i], orientation)
        if previous is None:
            current = picture.resize(
                stored, Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP
            )
            # Deciding on the largest thumbnail is cheap and carries over to the smaller ones.
            current = _without_opaque_alpha(current)
        else:
            current = previous.resize(stored, Image.Resampling.LANCZOS)
        previous = current
        made[i] = _encode(_upright(current, orientation), spec.widths[i], spec.quality)
    return tuple(made[i] for i in range(len(targets)))


def _upright(im: Image.Image, orientation: int) -> Image.Image:
    method = _UPRIGHT.get(orientation)
    return im if method is None else im.transpose(method)


def _encode(im: Image.Image, width: int, quality: int) -> Thumbnail:
    # Encoders copy comment, ICC profile and the like from im.info, which resize() carried
    # over from the source: thumbnails carry no metadata.
    im.info = {}
    out = io.BytesIO()
    if im.mode in ("LA", "RGBA"):
        # Speed over a few percent of size: optimize would retry every filter.
        im.save(out, "PNG", optimize=False, compress_level=_PNG_COMPRESS_LEVEL)
        ext = "png"
    else:
        im.save(out, "JPEG", quality=quality, optimize=True, progressive=False)
        ext = "jpg"
    return Thumbnail(width=width, size=im.size, ext=ext, data=out.getvalue())
