"""Encoding thumbnails: output format, quality, transparency, the metadata that is kept.

Thumbnails carry no metadata by default (no EXIF, GPS, XMP, comments or ICC profile: they are
sRGB, see colour.py). `keep_metadata` names what to carry over, each where the output format can
hold it: EXIF-based items in JPEG, PNG, WebP and AVIF; `xmp` in JPEG, WebP and AVIF; `comment`
in JPEG and GIF. The orientation is never carried over, in EXIF or XMP: thumbnails are upright.
Kept XMP also loses its GPS coordinates unless `gps` is kept (render/xmp.py).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import ExifTags, Image, features

from thumbd.render.spec import EXIF_ITEMS
from thumbd.render.xmp import cleaned as cleaned_xmp

# keep_metadata items -> EXIF tags, by the IFD they live in (0: the main IFD).
_EXIF_IFD = ExifTags.IFD.Exif
_GPS_IFD = ExifTags.IFD.GPSInfo
_EXIF_ITEMS: dict[str, dict[int, tuple[int, ...]]] = {
    "copyright": {0: (ExifTags.Base.Copyright,)},
    "artist": {0: (ExifTags.Base.Artist,)},
    "datetime": {
        0: (ExifTags.Base.DateTime,),
        _EXIF_IFD: (
            ExifTags.Base.DateTimeOriginal,
            ExifTags.Base.DateTimeDigitized,
            ExifTags.Base.OffsetTimeOriginal,
        ),
    },
    "camera": {
        0: (ExifTags.Base.Make, ExifTags.Base.Model),
        _EXIF_IFD: (ExifTags.Base.LensMake, ExifTags.Base.LensModel),
    },
}
assert tuple(_EXIF_ITEMS) == EXIF_ITEMS  # the names config checks keep_metadata against

_PNG_COMPRESS_LEVEL = 6
# The longest side each encoder can store (libjpeg's JPEG_MAX_DIMENSION, libwebp's
# WEBP_MAX_DIMENSION, GIF's 16-bit fields, AV1's frame size); PNG's is 2**31 - 1. Thumbnails are
# never upscaled, so a long strip narrower than a width keeps its full height.
_MAX_SIDE = {"JPEG": 65500, "WEBP": 16383, "GIF": 65535, "AVIF": 65536}
_FORMAT_NAMES = {"JPEG": "JPEG", "WEBP": "WebP", "GIF": "GIF", "AVIF": "AVIF"}
_WEBP_METHOD = 4  # libwebp's default effort: the usual size/speed balance
_AVIF_SPEED = 8  # 0 slowest .. 10 fastest; 8 stays well under a JPEG's time at thumbnail size


@dataclass(frozen=True, slots=True)
class Metadata:
    """What a source carries that the configuration asked to keep."""

    exif: bytes | None = None
    xmp: bytes | None = None
    comment: bytes | None = None


@dataclass(frozen=True, slots=True)
class Options:
    """How to encode: from RenderSpec, reduced to what encoding needs."""

    format: str = "auto"
    jpeg_quality: int = 85
    webp_quality: int = 80
    avif_quality: int = 60
    progressive: bool = False
    background: tuple[int, int, int] = (255, 255, 255)


class TooLarge(Exception):
    """A thumbnail larger than its output format can store; the message says which."""


def _check_side(size: tuple[int, int], fmt: str) -> None:
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(size) > limit:
        w, h = size
        raise TooLarge(
            f"too large for {_FORMAT_NAMES[fmt]}: a {w}x{h} thumbnail exceeds its {limit} pixels"
            " a side (a PNG output has no such limit)"
        )


def avif_available() -> bool:
    try:
        return features.check_module("avif")
    except ValueError:  # Pillow before 11.2 does not know the name at all
        return False


def kept_metadata(im: Image.Image, keep: Sequence[str]) -> Metadata:
    """Pick what `keep` names from a decoded source (nothing when `keep` is empty)."""
    if not keep:
        return Metadata()
    exif = _kept_exif(im, keep)
    xmp = im.info.get("xmp") if "xmp" in keep else None
    if isinstance(xmp, bytes) and xmp:
        xmp = cleaned_xmp(xmp, keep_gps="gps" in keep)
    comment = im.info.get("comment") if "comment" in keep else None
    return Metadata(
        exif=exif,
        xmp=xmp if isinstance(xmp, bytes) and xmp else None,
        comment=comment if isinstance(comment, bytes) and comment else None,
    )


def _kept_exif(im: Image.Image, keep: Sequence[str]) -> bytes | None:
    try:
        source = im.getexif()
        out = Image.Exif()
        for item in keep:
            for ifd, tags in _EXIF_ITEMS.get(item, {}).items():
                values = source if ifd == 0 else source.get_ifd(ifd)
                target = out if ifd == 0 else out.get_ifd(ifd)
                for tag in tags:
                    if tag in values:
                        target[tag] = values[tag]
        if "gps" in keep and (gps := source.get_ifd(_GPS_IFD)):
            out[_GPS_IFD] = dict(gps)
        return out.tobytes() if (len(out) or out.get_ifd(_EXIF_IFD)) else None
    except Exception:  # a damaged EXIF block loses the metadata, never the thumbnail
        return None


def output_format(has_alpha: bool, options: Options) -> str:
    """The Pillow format a still thumbnail is written in."""
    if options.format == "auto":
        return "PNG" if has_alpha else "JPEG"
    return {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}[options.format]


EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "AVIF": "avif", "GIF": "gif"}


def encode_still(im: Image.Image, options: Options, meta: Metadata) -> tuple[str, bytes]:
    """(extension, bytes) of one still thumbnail. `im` is L, LA, RGB or RGBA, sRGB, upright."""
    fmt = output_format(im.mode in ("LA", "RGBA"), options)
    _check_side(im.size, fmt)
    im = _for_format(im, fmt, options.background)
    # Encoders copy comment, ICC profile and the like from im.info, which resize() carried
    # over from the source: only what `meta` holds may reach the file.
    im.info = {}
    out = io.BytesIO()
    im.save(out, fmt, **_params(fmt, options, meta))
    return EXTENSIONS[fmt], out.getvalue()


def encode_animation(
    frames: Sequence[Image.Image],
    durations: Sequence[int],
    loop: int | None,
    fmt: str,
    options: Options,
    meta: Metadata,
) -> tuple[str, bytes]:
    """(extension, bytes) of an animated GIF or WebP; `loop` None means play once."""
    _check_side(frames[0].size, fmt)
    frames = [_for_format(f, fmt, options.background) for f in frames]
    for f in frames:
        f.info = {}
    params: dict[str, object] = {
        "save_all": True,
        "append_images": frames[1:],
        "duration": list(durations),
    }
    if fmt == "GIF":
        params["disposal"] = 2  # clear to the background: no trails behind transparent parts
        if loop is not None:
            params["loop"] = loop
        if meta.comment:
            params["comment"] = meta.comment
    else:
        params.update(_params("WEBP", options, meta))
        params["loop"] = 1 if loop is None else loop
    out = io.BytesIO()
    frames[0].save(out, fmt, **params)
    return EXTENSIONS[fmt], out.getvalue()


def _for_format(im: Image.Image, fmt: str, background: tuple[int, int, int]) -> Image.Image:
    """Modes each format stores; transparency flattened onto `background` for JPEG."""
    if fmt == "JPEG" and im.mode in ("LA", "RGBA"):
        return flatten(im, background)
    if fmt in ("WEBP", "AVIF", "GIF") and im.mode in ("L", "LA"):
        return im.convert("RGBA" if im.mode == "LA" else "RGB")
    return im


def flatten(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Composite an image with alpha over an opaque background colour (never black)."""
    rgba = im.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*background, 255))
    base.alpha_composite(rgba)
    return base.convert("RGB")


def _params(fmt: str, options: Options, meta: Metadata) -> dict[str, object]:
    params: dict[str, object] = {}
    if fmt == "JPEG":
        params = {
            "quality": options.jpeg_quality,
            "optimize": True,
            "progressive": options.progressive,
        }
    elif fmt == "PNG":
        # Speed over a few percent of size: optimize would retry every filter.
        params = {"optimize": False, "compress_level": _PNG_COMPRESS_LEVEL}
    elif fmt == "WEBP":
        params = {"quality": options.webp_quality, "method": _WEBP_METHOD}
    elif fmt == "AVIF":
        params = {"quality": options.avif_quality, "speed": _AVIF_SPEED}
    params.update(_metadata_params(fmt, meta))
    return params


_JPEG_XMP = 65533 - len(b"http://ns.adobe.com/xap/1.0/\x00")  # 65,504


def _metadata_params(fmt: str, meta: Metadata) -> Mapping[str, object]:
    params: dict[str, object] = {}
    if meta.exif and fmt in ("JPEG", "PNG", "WEBP", "AVIF"):
        params["exif"] = meta.exif
    # A JPEG holds XMP in one APP1 marker (at most 65,504 bytes of packet); a larger packet
    # is left out rather than failing the thumbnail (WebP and AVIF have no such limit).
    if meta.xmp and (fmt in ("WEBP", "AVIF") or (fmt == "JPEG" and len(meta.xmp) <= _JPEG_XMP)):
        params["xmp"] = meta.xmp
    if meta.comment and fmt in ("JPEG", "GIF"):
        params["comment"] = meta.comment
    return params
