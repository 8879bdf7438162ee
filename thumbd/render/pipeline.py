"""Pillow rendering: decode once, orient, convert colour, make every size, encode.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TypeVar

from PIL import (
    ExifTags,
    Image,
    ImageChops,
    ImageColor,
    ImageFile,
    ImageFilter,
    PngImagePlugin,
    UnidentifiedImageError,
)

from thumbd import testhooks
from thumbd.config import Config, ConfigError
from thumbd.output.writer import thumbnail_name
from thumbd.render import colour, encode, placeholder, sizing
from thumbd.render.sizing import Target
from thumbd.render.spec import (
    Box,
    FailKind,
    Failure,
    NamedSize,
    RenderResult,
    RenderSpec,
    Signature,
    Size,
    Thumbnail,
)


def spec_from_config(config: Config) -> RenderSpec:
    """The daemon's spec: `[thumbnails]` plus `[resize] max_pixels`. Checks what only the
    render stage can (a colour Pillow knows, an AVIF encoder), naming the file and the key."""
    t = config.thumbnails
    return RenderSpec(
        widths=t.widths,
        quality=t.quality,
        max_pixels=config.resize.max_pixels,
        sizes=tuple(
            NamedSize(
                s.name,
                s.width,
                s.height,
                s.mode,
                "attention" if s.crop == "attention" else "centre",
            )
            for s in t.size
        ),
        format=_output_format(config),
        webp_quality=t.webp_quality,
        avif_quality=t.avif_quality,
        progressive=t.progressive,
        background=_rgb(config),
        keep_metadata=t.keep_metadata,
        animated=t.animated,
        sharpen=t.sharpen,
        index=t.index,
    )


def _rgb(config: Config) -> tuple[int, int, int]:
    value = config.thumbnails.background
    try:
        r, g, b = ImageColor.getrgb(value)[:3]
    except ValueError:
        raise _setting_error(
            config, "background", 'a colour ("white", "#rrggbb", "rgb(r, g, b)")', value
        ) from None
    return r, g, b


def _output_format(config: Config) -> str:
    value = config.thumbnails.format
    if value == "avif" and not encode.avif_available():
        expected = "a format this Pillow can write (it has no AVIF support: Pillow 11.3 or later)"
        raise _setting_error(config, "format", expected, value)
    return value


def _setting_error(config: Config, key: str, expected: str, value: str) -> ConfigError:
    where = config.source or "the configuration"
    return ConfigError(f"{where}: [thumbnails] {key}: expected {expected}, got {value!r}")


def _encoding(spec: RenderSpec) -> encode.Options:
    return encode.Options(
        format=spec.format,
        jpeg_quality=spec.quality,
        webp_quality=spec.webp_quality,
        avif_quality=spec.avif_quality,
        progressive=spec.progressive,
        background=spec.background,
    )


def _register_heif() -> bool:
    """HEIC/HEIF (the iPhone default) through pillow-heif, when it is installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    # Never decode embedded thumbnails, depth maps or auxiliary images: only the picture.
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    return True


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
    *(("AVIF",) if encode.avif_available() else ()),
    *(("HEIF",) if _register_heif() else ()),
)


# PNG text chunks (XMP, comments, ImageMagick's hex "Raw profile" chunks, image generators'
# workflows) are read while opening, and Pillow refuses a compressed one over 1 MB decompressed:
# Photoshop's XMP history alone can be more, and the picture failed for its metadata. Allow one
# chunk Pillow's whole text budget (64 MB, still bounded: a text bomb fails as too large).
PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY


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
# to average: the result cannot be told from a full decode. Twice, less a tenth: DCT scales
# are powers of two, and a 12 MP phone photo taken upright (3024 px wide) gives 378 px at 1/8,
# 1.89 times 200. Decoding it at 1/8 instead of 1/4 costs 35-40% less CPU and its 200 px
# thumbnail moves 0.05-0.35 dB further from the ideal (docs/benchmarks.md); at 1.6 times
# (a 640 px photo at 1/2) the loss is 5 dB, so the margin stays near two.
_DRAFT_MARGIN = 1.8
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
    """The input cannot be rendered: the failure for the result."""

    def __init__(self, kind: FailKind, reason: str) -> None:
        super().__init__(reason)
        self.failure = Failure(kind, reason)


# ---------------------------------------------------------------------------------------------
# Entry point


def render(path: str, spec: RenderSpec) -> RenderResult:
    """Read `path` once and make one thumbnail per width of `spec`, then one per named size."""

    def make(f: IO[bytes], signature: Signature, started: float) -> RenderResult:
        testhooks.trip(f)
        return _render_source(f, spec, os.path.basename(path), signature, started)

    return _with_source(path, make)


def render_bytes(
    data: bytes, spec: RenderSpec, name: str, signature: Signature | None = None
) -> RenderResult:
    """render() of a source already read into memory, for a worker that cannot see the watched
    folder (a Dask cluster). `name` is the source's file name (render() uses it in the index);
    `signature` is what the reader saw, passed through to the result."""
    started = time.process_time()
    try:
        if not data:
            raise _Refused(FailKind.EMPTY, "empty file (0 bytes)")
        f = io.BytesIO(data)
        testhooks.trip(f)
        return _render_source(f, spec, name, signature, started)
    except _Refused as refused:
        return _refusal(refused, signature, started)


def read_source(path: str) -> tuple[Signature, bytes] | RenderResult:
    """The whole source and the signature it was read at, to ship to render_bytes(); or the
    result render() gives for a file it cannot read."""

    def read(f: IO[bytes], signature: Signature, _started: float) -> tuple[Signature, bytes]:
        try:
            return signature, f.read()
        except OSError as e:
            raise _Refused(FailKind.UNREADABLE, f"cannot read file: {e.strerror or e}") from e

    return _with_source(path, read)


_T = TypeVar("_T")


def _with_source(path: str, use: Callable[[IO[bytes], Signature, float], _T]) -> _T | RenderResult:
    """`use(file, signature, started)` on `path` opened safely and checked to be a non-empty
    regular file; a refusal on the way becomes the result render() gives for the file."""
    started = time.process_time()
    signature: Signature | None = None
    try:
        with _open_source(path) as f:
            st = os.fstat(f.fileno())
            signature = (st.st_size, st.st_mtime_ns, st.st_ino)
            _check_file(st)
            return use(f, signature, started)
    except _Refused as refused:
        return _refusal(refused, signature, started)


def _render_source(
    f: IO[bytes], spec: RenderSpec, name: str, signature: Signature | None, started: float
) -> RenderResult:
    source_size, thumbnails, index = _render_file(f, spec, name)
    return RenderResult(
        signature=signature,
        source_size=source_size,
        thumbnails=thumbnails,
        cpu_seconds=time.process_time() - started,
        index=index,
    )


def _refusal(refused: _Refused, signature: Signature | None, started: float) -> RenderResult:
    return RenderResult(
        signature=signature,
        source_size=None,
        failure=refused.failure,
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
        raise _Refused(
            FailKind.NOT_FOUND, "file not found (deleted or renamed before it was read)"
        ) from e
    except PermissionError as e:
        raise _Refused(FailKind.UNREADABLE, "permission denied reading the file") from e
    except IsADirectoryError as e:
        raise _Refused(FailKind.UNREADABLE, "not a regular file (a directory)") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _Refused(
                FailKind.UNREADABLE, "a symbolic link (thumbd does not follow links)"
            ) from e
        raise _Refused(FailKind.UNREADABLE, f"cannot open file: {e.strerror or e}") from e


def _check_file(st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _Refused(FailKind.UNREADABLE, "not a regular file")
    if st.st_size == 0:
        raise _Refused(FailKind.EMPTY, "empty file (0 bytes)")


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
            raise _Refused(FailKind.TOO_LARGE, _too_large_for_pillow(e, max_pixels)) from e
        except encode.TooLarge as e:  # an animation is encoded before its file is closed
            raise _Refused(FailKind.TOO_LARGE, str(e)) from e
        except UnidentifiedImageError as e:
            raise _Refused(
                FailKind.UNIDENTIFIED,
                "cannot identify image file (not one of: " + ", ".join(ALLOWED_FORMATS) + ")",
            ) from e
        except MemoryError as e:
            raise _Refused(FailKind.OUT_OF_MEMORY, "out of memory decoding the image") from e
        except _INPUT_ERRORS as e:
            raise _Refused(*_describe(e)) from e


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


def _describe(e: BaseException) -> tuple[FailKind, str]:
    """The kind and words for what a decoder raised (Pillow says it only in words)."""
    text = str(e) if isinstance(e, OSError | SyntaxError) else f"{type(e).__name__}: {e}"
    lowered = text.lower()
    if isinstance(e, EOFError) or "truncated" in lowered:
        return FailKind.TRUNCATED, "image file is truncated"
    if "max_text_chunk" in lowered or "memory used in text chunks" in lowered:
        limit = PngImagePlugin.MAX_TEXT_MEMORY // 2**20
        return (
            FailKind.TOO_LARGE,
            f"too large: PNG text chunks (metadata) over {limit} MB decompressed",
        )
    if "not available" in lowered or "unsupported" in lowered or "unknown raw mode" in lowered:
        return FailKind.UNSUPPORTED, f"unsupported format: {text}"
    return FailKind.UNDECODABLE, f"cannot decode image: {text}"


@dataclass(frozen=True, slots=True)
class _Source:
    """What decoding learnt about a source, for everything after it."""

    name: str  # file name, for the index
    size: Size  # upright
    orientation: int
    box: Box | None  # the source's box in the drafted picture
    profile: bytes | None  # to convert from; None: already sRGB
    metadata: encode.Metadata


Rendered = tuple[Size, tuple[Thumbnail, ...], bytes | None]


def _render_file(f: IO[bytes], spec: RenderSpec, name: str) -> Rendered:
    if not spec.widths and not spec.sizes:
        raise ValueError("RenderSpec has no widths and no sizes")  # a bug, not a bad file
    with _input_errors_refused(spec.max_pixels), Image.open(f, formats=_openers()) as im:
        _pick_largest_image(im)
        first = _first_frame(im)
        if first:
            im.seek(first)
        stored_size = im.size
        _check_pixels(stored_size, spec.max_pixels)  # before anything can load pixels
        box = _draft(im, spec)
        im.load()
        # Read after load(): some decoders (TIFF in Pillow 13) apply the orientation
        # themselves while loading, report the upright size from open(), and drop the tag.
        orientation = _orientation(im)
        source = _Source(
            name=name,
            size=_oriented(stored_size, orientation),
            orientation=orientation,
            box=box,
            profile=colour.profile_to_convert(im),
            metadata=encode.kept_metadata(im, spec.keep_metadata),
        )
        targets = sizing.targets(source.size, spec.widths, spec.sizes)
        if spec.animated and _is_animation(im, first):
            return _render_animation(im, first, source, targets, spec)
    picture = _renderable(im)  # pixels are in memory now; closing the file does not matter
    return _render_still(picture, source, targets, spec)


def _pick_largest_image(im: Image.Image) -> None:
    """Seek a multi-image TIFF or HEIF to its largest image, never a small embedded preview.

    Seeking reads headers only; the pixels of the chosen image are decoded once, later.
    """
    if im.format not in ("TIFF", "HEIF"):
        return
    count = min(getattr(im, "n_frames", 1), _MAX_IMAGES_LOOKED_AT)
    if count < 2:
        return
    first = im.tell()
    sizes = {}
    for i in range(count):
        im.seek(i)
        sizes[i] = im.size[0] * im.size[1]
    best = max(sizes, key=lambda i: (sizes[i], i == first))  # the primary image wins a tie
    im.seek(best)


_MAX_IMAGES_LOOKED_AT = 64
_ANIMATED_FORMATS = ("GIF", "WEBP", "PNG", "AVIF")


def _first_frame(im: Image.Image) -> int:
    """1 for an APNG whose default image is not part of the animation (Pillow's frame 0 is
    then the picture shown by viewers without APNG, which browsers never show), else 0."""
    if im.format == "PNG" and im.info.get("default_image") and getattr(im, "n_frames", 1) > 1:
        return 1
    return 0


def _is_animation(im: Image.Image, first: int) -> bool:
    return im.format in _ANIMATED_FORMATS and getattr(im, "n_frames", 1) - first > 1


def _check_pixels(size: Size, max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise _Refused(
            FailKind.TOO_LARGE, f"too large: {w}x{h} pixels exceeds max_pixels {max_pixels}"
        )


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


def _draft(im: ImageFile.ImageFile, spec: RenderSpec) -> Box | None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the thumbnails are that much smaller.

    Must run before any pixel access. Returns the source's box in the drafted image (draft
    rounds the size up), for an exact resize.
    """
    if im.format not in _DRAFTABLE:
        return None
    # JPEG decoders do not orient, so the tag read now is the one load() will leave.
    upright = _oriented(im.size, _orientation(im))
    scale = max(t.scale for t in sizing.targets(upright, spec.widths, spec.sizes))
    w, h = im.size  # a scale is the same both ways round: no need to orient the request
    want = max(1, round(_DRAFT_MARGIN * w * scale)), max(1, round(_DRAFT_MARGIN * h * scale))
    drafted = im.draft(None, want)  # None: keep the decoded mode
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
    if mode == "CMYK":
        # Resized as it is, then converted with its (or the default) profile. Pillow reads
        # every CMYK JPEG as Adobe's inverted kind; only one with Adobe's marker is.
        if im.format in _DRAFTABLE and "adobe" not in im.info:
            return ImageChops.invert(im)
        return im
    if mode in ("P", "YCbCr", "RGBX"):
        return im.convert("RGB")
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
    raise _Refused(FailKind.UNSUPPORTED, f"unsupported format: image mode {mode}")


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
# Sizes


class _Pipeline:
    """Turns one decoded picture (or animation frame) into every target's image.

    The first resize makes a base at the largest scale any target needs; colour conversion
    happens there, at thumbnail size. Then targets are made largest first, each whole-picture
    one from the previous (the cascade), crops from the smallest whole picture still at least
    their scale. Everything is resized in the stored orientation and turned upright at the end:
    the same picture as turning the full image first, at a fraction of the cost.
    """

    def __init__(self, source: _Source, targets: list[Target], spec: RenderSpec, *, still: bool):
        self.source = source
        self.targets = targets
        self.spec = spec
        self.still = still
        self.order = sorted(range(len(targets)), key=lambda i: targets[i].scale, reverse=True)
        self.placed = False

    def run(self, picture: Image.Image, box: Box | None) -> tuple[list[Image.Image], Image.Image]:
        """(one upright sRGB image per target, in target order; the upright base)."""
        base_size = self._base_size()
        base = picture.resize(
            self._stored(base_size), Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP
        )
        if self.still:
            base = _without_opaque_alpha(base)  # cheap here, and it carries over to every size
        base = colour.to_srgb(base, self.source.profile)
        if not self.placed:
            self._place_crops(base)
        made: dict[int, Image.Image] = {}
        current = base
        for i in self.order:
            target = self.targets[i]
            if target.crop is None:
                if current.size != self._stored(target.size):
                    current = current.resize(self._stored(target.size), Image.Resampling.LANCZOS)
                out = current
            else:
                out = current.resize(
                    self._stored(target.size),
                    Image.Resampling.LANCZOS,
                    box=self._crop_in(current, target.crop),
                )
            made[i] = self._finish(out, target)
        return [made[i] for i in range(len(self.targets))], _upright(base, self.source.orientation)

    def _base_size(self) -> Size:
        first = self.targets[self.order[0]]
        if first.crop is None:
            return first.size
        sw, sh = self.source.size
        return max(1, round(sw * first.scale)), max(1, round(sh * first.scale))

    def _stored(self, upright: Size) -> Size:
        return _oriented(upright, self.source.orientation)

    def _crop_in(self, current: Image.Image, crop: Box) -> Box:
        """An upright source box -> the same region of `current` (stored orientation)."""
        x0, y0, x1, y1 = sizing.stored_box(crop, self.source.size, self.source.orientation)
        sw, sh = self._stored(self.source.size)
        fx, fy = current.width / sw, current.height / sh
        return x0 * fx, y0 * fy, x1 * fx, y1 * fy

    def _place_crops(self, base: Image.Image) -> None:
        """Move attention crops once, from the first picture (animation frames share them)."""
        self.placed = True
        if any(t.attention for t in self.targets):
            upright = _upright(base, self.source.orientation)
            self.targets = [
                sizing.place_by_attention(t, upright, self.source.size) if t.attention else t
                for t in self.targets
            ]

    def _finish(self, im: Image.Image, target: Target) -> Image.Image:
        im = _upright(im, self.source.orientation)
        if self.spec.sharpen and target.scale <= _SHARPEN_BELOW_SCALE:
            # Light: restores the crispness a large downscale averages away, no halos.
            im = im.filter(ImageFilter.UnsharpMask(radius=0.6, percent=60, threshold=2))
        return im


_SHARPEN_BELOW_SCALE = 1 / 3  # sharpen thumbnails at most a third of the source's size


def _upright(im: Image.Image, orientation: int) -> Image.Image:
    method = _UPRIGHT.get(orientation)
    return im if method is None else im.transpose(method)


# ---------------------------------------------------------------------------------------------
# Stills and animations


def _render_still(
    picture: Image.Image, source: _Source, targets: list[Target], spec: RenderSpec
) -> Rendered:
    images, base = _Pipeline(source, targets, spec, still=True).run(picture, source.box)
    options = _encoding(spec)
    thumbnails = []
    for target, im in zip(targets, images, strict=True):
        try:
            ext, data = encode.encode_still(im, options, source.metadata)
        except encode.TooLarge as e:
            raise _Refused(FailKind.TOO_LARGE, str(e)) from e
        thumbnails.append(Thumbnail(target.width, im.size, ext, data, label=target.label))
    return source.size, tuple(thumbnails), _index(spec, source, thumbnails, base)


def _render_animation(
    im: Image.Image, first_frame: int, source: _Source, targets: list[Target], spec: RenderSpec
) -> Rendered:
    """Every frame through the same pipeline (frames are resized as they are decoded, so memory
    holds one full frame at a time), then an animated GIF or WebP per target."""
    pipeline = _Pipeline(source, targets, spec, still=False)
    loop = im.info.get("loop")
    frames: list[list[Image.Image]] = [[] for _ in targets]
    durations: list[int] = []
    first = None
    mode = "RGB"
    for n in range(first_frame, getattr(im, "n_frames", 1)):
        im.seek(n)
        im.load()
        durations.append(int(im.info.get("duration") or 0))
        picture = _renderable(im)
        if n == first_frame:
            mode = "RGBA" if picture.mode in ("LA", "RGBA") else "RGB"
        images, base = pipeline.run(picture.convert(mode), None)
        first = first or base
        for made, image in zip(frames, images, strict=True):
            made.append(image)
    fmt = "GIF" if im.format == "GIF" and spec.format != "webp" else "WEBP"
    options = _encoding(spec)
    thumbnails = []
    for target, made in zip(targets, frames, strict=True):
        ext, data = encode.encode_animation(
            made, durations, loop if isinstance(loop, int) else None, fmt, options, source.metadata
        )
        thumbnails.append(
            Thumbnail(target.width, made[0].size, ext, data, label=target.label, frames=len(made))
        )
    assert first is not None
    return source.size, tuple(thumbnails), _index(spec, source, thumbnails, first)


def _index(
    spec: RenderSpec, source: _Source, thumbnails: list[Thumbnail], picture: Image.Image
) -> bytes | None:
    if not spec.index:
        return None
    entries = [
        placeholder.Entry(
            file=thumbnail_name(source.name, t.name, t.ext),
            name=t.name,
            size=t.size,
            bytes=len(t.data),
            frames=t.frames,
        )
        for t in thumbnails
    ]
    return placeholder.index_json(source.name, source.size, entries, picture)
