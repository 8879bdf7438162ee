"""The generic decoder: Pillow, restricted to the formats thumbd reads.

Opens with `Image.open(formats=...)`, so no other Pillow decoder is ever tried; seeks a
multi-image TIFF or HEIF to its largest image; checks the pixel count before any pixel is
decoded; lets a JPEG shrink while decoding (decoders/jpeg.py); and brings every mode to one the
resizer handles (L, LA, RGB, RGBA, CMYK). What Pillow raises becomes a Refused
(decoders/errors.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import IO

from PIL import Image, ImageChops, ImageFile, PngImagePlugin

from thumbd.render import apple, colour, encode
from thumbd.render.decoders import Animation, Decoded, heif, jpeg
from thumbd.render.decoders.errors import refusing_input_errors
from thumbd.render.orientation import exif_orientation, oriented
from thumbd.render.source import Refused
from thumbd.render.spec import FailKind, RenderSpec, Size

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
    *(("HEIF",) if heif.register() else ()),
)

# PNG text chunks (XMP, comments, ImageMagick's hex "Raw profile" chunks, image generators'
# workflows) are read while opening, and Pillow refuses a compressed one over 1 MB decompressed:
# Photoshop's XMP history alone can be more, and the picture failed for its metadata. Allow one
# chunk Pillow's whole text budget (64 MB, still bounded: a text bomb fails as too large).
PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY

_MAX_IMAGES_LOOKED_AT = 64
_ANIMATED_FORMATS = ("GIF", "WEBP", "PNG", "AVIF")


def _openers() -> tuple[str, ...]:
    """ALLOWED_FORMATS that Pillow has an opener for, to pass to Image.open.

    Image.open raises KeyError (not "cannot identify") for a name without an opener. MPO has
    none: the JPEG opener returns MPO files. Checked per call, so a plugin registered later
    (e.g. pillow_heif's) counts; init() does the work only once.
    """
    Image.init()
    return tuple(name for name in ALLOWED_FORMATS if name in Image.OPEN)


def refusing(spec: RenderSpec) -> AbstractContextManager[None]:
    """What Pillow raises, as a Refused, for this module's formats."""
    return refusing_input_errors(spec.max_pixels, ALLOWED_FORMATS)


def decode(f: IO[bytes], spec: RenderSpec) -> Decoded:
    """The picture in `f` (its largest image; an animation's frames with `spec.animated`)."""
    with refusing(spec):
        # Not closed: close() would free the pixels `picture` may share; the file is the
        # caller's, and an animation's frames read it later.
        return _decode(Image.open(f, formats=_openers()), spec)


def _decode(im: ImageFile.ImageFile, spec: RenderSpec) -> Decoded:
    _pick_largest_image(im)
    first = _first_frame(im)
    if first:
        im.seek(first)
    stored_size = im.size
    check_pixels(stored_size, spec.max_pixels)  # before anything can load pixels
    box = jpeg.draft(im, spec)
    im.load()
    # Read after load(): some decoders (TIFF in Pillow 13) apply the orientation
    # themselves while loading, report the upright size from open(), and drop the tag.
    orientation = exif_orientation(im)
    profile = colour.profile_to_convert(im)
    metadata = encode.kept_metadata(im, spec.keep_metadata)
    picture = renderable(im)
    animation = None
    if spec.animated and _is_animation(im, first):
        mode = "RGBA" if picture.mode in ("LA", "RGBA") else "RGB"
        loop = im.info.get("loop")
        animation = Animation(
            _frames(im, first, mode, spec),
            loop if isinstance(loop, int) else None,
            gif=im.format == "GIF",
        )
    return Decoded(
        picture,
        orientation=orientation,
        size=oriented(stored_size, orientation),
        box=box,
        profile=profile,
        metadata=metadata,
        animation=animation,
        facts={**_motion_photo(im), **apple.facts(im)},
    )


# Android motion photos (Google's MotionPhoto, Samsung's and older Pixels' MicroVideo) are a
# JPEG with an MP4 appended, said in the XMP: a still like any other, marked in the index.
_MOTION_MARKS = (b"MotionPhoto", b"MicroVideo")


def _motion_photo(im: ImageFile.ImageFile) -> dict[str, object]:
    xmp = im.info.get("xmp")
    if im.format in jpeg.FORMATS and isinstance(xmp, bytes | str):
        packet = xmp.encode() if isinstance(xmp, str) else xmp
        if any(mark + b'="1"' in packet or mark + b">1<" in packet for mark in _MOTION_MARKS):
            return {"motion_photo": True}
    return {}


def _frames(
    im: ImageFile.ImageFile, first: int, mode: str, spec: RenderSpec
) -> Iterator[tuple[Image.Image, int]]:
    """Every frame from `first` on, one at a time (memory holds one full frame), in `mode`.
    Frees `im` when done or abandoned: every frame given out is a copy."""
    try:
        for n in range(first, getattr(im, "n_frames", 1)):
            with refusing(spec):
                im.seek(n)
                im.load()
                duration = int(im.info.get("duration") or 0)
                frame = renderable(im).convert(mode)  # a copy: the next seek reuses `im`
            yield frame, duration
    finally:
        im.close()


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


def _first_frame(im: Image.Image) -> int:
    """1 for an APNG whose default image is not part of the animation (Pillow's frame 0 is
    then the picture shown by viewers without APNG, which browsers never show), else 0."""
    if im.format == "PNG" and im.info.get("default_image") and getattr(im, "n_frames", 1) > 1:
        return 1
    return 0


def _is_animation(im: Image.Image, first: int) -> bool:
    return im.format in _ANIMATED_FORMATS and getattr(im, "n_frames", 1) - first > 1


def check_pixels(size: Size, max_pixels: int) -> None:
    """Refuse a source of more than `max_pixels` pixels."""
    w, h = size
    if w * h > max_pixels:
        raise Refused(
            FailKind.TOO_LARGE, f"too large: {w}x{h} pixels exceeds max_pixels {max_pixels}"
        )


# ---------------------------------------------------------------------------------------------
# Modes


def renderable(im: Image.Image) -> Image.Image:
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
        # Resized as it is, then converted with its (or the default) profile.
        return ImageChops.invert(im) if jpeg.is_inverted_cmyk(im) else im
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
    raise Refused(FailKind.UNSUPPORTED, f"unsupported format: image mode {mode}")


def _scale_to_l(im: Image.Image, lo: float, hi: float) -> Image.Image:
    """Map lo..hi linearly onto 0..255 (convert("L") alone would clip everything above 255)."""
    scale = 256 / (hi - lo + 1) if hi > lo else 1.0
    offset = -lo * scale
    return im.point(lambda v: v * scale + offset).convert("L")


def _int_to_l(im: Image.Image) -> Image.Image:
    lo, hi = extrema(im)
    if lo >= 0 and hi <= 65535:
        return _scale_to_l(im, 0, 65535)  # 16-bit data in a 32-bit container: value/256
    return _scale_to_l(im, lo, hi)  # anything else: stretch what is there


def _float_to_l(im: Image.Image) -> Image.Image:
    lo, hi = extrema(im)
    if lo >= 0 and hi <= 1.0:
        return im.point(lambda v: v * 255).convert("L")  # normalised 0..1 data
    return im.convert("L")  # treat as 0..255; convert clamps the rest


def extrema(im: Image.Image) -> tuple[float, float]:
    """(lowest, highest) value of a one-band image."""
    lo, hi = im.getextrema()
    assert isinstance(lo, int | float) and isinstance(hi, int | float)  # one band
    return lo, hi
