"""Colour management: bring a source into sRGB with LittleCMS (Pillow's ImageCms).

Thumbnails are sRGB and carry no profile: sRGB is what browsers and viewers assume for untagged
images (CSS Color 4), and even a compact sRGB profile would cost more bytes than a 32 px
thumbnail's pixels. So every source that says it is something else is converted:

- RGB with an ICC profile that is not sRGB (Adobe RGB, Display P3, ProPhoto, a camera's);
- HEIF whose colour is an nclx box (H.273 code points, what libheif and Android write instead of
  a profile) naming other primaries than sRGB's: a matrix/TRC profile is made from them;
- grey with a grey ICC profile (Photoshop embeds Dot Gain 20 % or Gray Gamma 2.2 in greyscale
  files): converted to sRGB and back to one channel (the grey axis stays grey);
- CMYK with its ICC profile, or, without one, with the built-in FOGRA39 profile (ISO 12647-2
  coated paper, as libvips and sharp assume too): the naive formula shows 100 % cyan as the
  screen's pure cyan. The built-in profile is made from Fogra's measurements (render/profiles/)
  and read relative colorimetric, paper white as screen white: against those measurements that
  is off by a mean ΔE2000 of 0.26 where perceptual is off by 1.4, since LittleCMS remaps a v2
  profile's perceptual black.

An sRGB profile, or none, costs nothing: no transform is built. The renderer converts after its
first resize, at thumbnail size (what libvips' thumbnail does), so the cost does not grow with
the source. Transforms are cached per profile in the worker process; a profile LittleCMS cannot
use is ignored (the image is shown as if untagged), never a failure.
"""

from __future__ import annotations

import functools
import io
import re
from importlib import resources

from PIL import Image, ImageCms

from thumbd.render import icc

# A marker for "CMYK without a profile": the built-in one is read on first use.
DEFAULT_CMYK = b"thumbd:default-cmyk"
_FOGRA39 = "profiles/FOGRA39-thumbd.icc"  # package data of thumbd.render

_SRGB_NAME = re.compile(r"\bsRGB\b", re.IGNORECASE)
# Colour spaces ImageCms reports (ICC signatures, padded) for the modes thumbd converts.
_SPACE_FOR_MODE = {"RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK", "L": "GRAY"}
# Grey source modes (the renderer makes them L or LA) whose grey profile is applied.
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N")


def profile_to_convert(im: Image.Image) -> bytes | None:
    """The profile to convert `im` from, or None when its pixels are sRGB already.

    Call it on the decoded image, before anything drops `info`.
    """
    data = im.info.get("icc_profile")
    profile = data if isinstance(data, bytes) and data else None
    nclx = im.info.get("nclx_profile")  # pillow-heif's; an ICC profile takes precedence
    if profile is None and isinstance(nclx, dict) and im.mode in ("RGB", "RGBA"):
        return _nclx_profile(nclx)
    if im.mode == "CMYK":
        return profile if profile is not None and _usable(profile, "CMYK") else DEFAULT_CMYK
    if im.mode in ("RGB", "RGBA", "P", "PA", "RGBX") and profile is not None:  # all become RGB(A)
        return profile if _usable(profile, "RGB") and not _is_srgb(profile) else None
    if im.mode in _GREY_MODES and profile is not None:
        return profile if _usable(profile, "GRAY") else None
    return None  # images without a profile: taken as sRGB


# H.273 colour primaries that need no conversion: BT.709 (sRGB's) and unspecified.
_NCLX_SRGB_PRIMARIES = (1, 2)
# H.273 transfer characteristics -> the display curve. The video curves (BT.709, 601, 2020) are
# shown with the sRGB one, as browsers do; HDR (PQ, HLG) and the rest are not converted.
_NCLX_CURVES: dict[int, icc.Curve] = {
    1: icc.SrgbCurve(),
    2: icc.SrgbCurve(),
    4: icc.Gamma(2.2),
    5: icc.Gamma(2.8),
    6: icc.SrgbCurve(),
    8: icc.Gamma(1.0),
    13: icc.SrgbCurve(),
    14: icc.SrgbCurve(),
    15: icc.SrgbCurve(),
}


def _nclx_profile(nclx: dict[str, object]) -> bytes | None:
    """An ICC profile for an nclx colour description, or None when it is sRGB's (or unusable)."""
    primaries, transfer = nclx.get("color_primaries"), nclx.get("transfer_characteristics")
    if primaries in _NCLX_SRGB_PRIMARIES or not isinstance(transfer, int):
        return None
    curve = _NCLX_CURVES.get(transfer)
    values = [nclx.get(f"color_primary_{c}_{axis}") for c in _XY_KEYS for axis in "xy"]
    xs = [v for v in values if isinstance(v, float) and 0 < v < 1]
    if curve is None or len(xs) != len(values):
        return None
    red, green, blue, white = ((xs[i], xs[i + 1]) for i in range(0, len(xs), 2))
    return _matrix_profile(red, green, blue, white, curve)


_XY_KEYS = ("red", "green", "blue", "white")


@functools.lru_cache(maxsize=16)
def _matrix_profile(
    red: icc.XY, green: icc.XY, blue: icc.XY, white: icc.XY, curve: icc.Curve
) -> bytes:
    return icc.rgb_profile("nclx colour", red, green, blue, white, curve)


def to_srgb(im: Image.Image, profile: bytes | None) -> Image.Image:
    """`im` (RGB, RGBA or CMYK; L or LA with a grey profile) converted from `profile` to sRGB;
    alpha is kept, and grey stays one channel."""
    if profile is None:
        return im if im.mode != "CMYK" else im.convert("RGB")
    if im.mode in ("L", "LA"):
        return _grey_to_srgb(im, profile)
    out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
    transform = _transform(profile, im.mode, out_mode)
    if transform is None:
        return im if im.mode != "CMYK" else im.convert("RGB")
    converted = ImageCms.applyTransform(im, transform)
    assert converted is not None  # not in place
    return converted


def _grey_to_srgb(im: Image.Image, profile: bytes) -> Image.Image:
    """Grey through sRGB: R = G = B on the grey axis, so taking L back loses nothing."""
    transform = _transform(profile, "L", "RGB")
    if transform is None:
        return im
    rgb = ImageCms.applyTransform(im.getchannel("L"), transform)
    assert rgb is not None  # not in place
    grey = rgb.convert("L")
    if im.mode == "LA":
        grey = Image.merge("LA", (grey, im.getchannel("A")))
    return grey


def _is_srgb(profile: bytes) -> bool:
    """An sRGB profile, by its description (cameras and editors embed the IEC one, 3 KB)."""
    return _read(profile)[1]


def _usable(profile: bytes, space: str) -> bool:
    """LittleCMS can read it and it describes `space` (an RGB profile on CMYK data is junk)."""
    return _read(profile)[0] == space


@functools.lru_cache(maxsize=64)
def _read(profile: bytes) -> tuple[str | None, bool]:
    """(colour space, is sRGB) of a profile; (None, False) when LittleCMS cannot read it."""
    opened = _open(profile)
    if opened is None:
        return None, False
    try:
        description = ImageCms.getProfileDescription(opened)
    except ImageCms.PyCMSError:
        description = ""
    return _space(opened), _SRGB_NAME.search(description) is not None


def _space(opened: ImageCms.ImageCmsProfile) -> str | None:
    """The colour space signature, stripped ("RGB", "GRAY", "CMYK"); None when it is not even
    text (a damaged header: reading it raises UnicodeDecodeError)."""
    try:
        return opened.profile.xcolor_space.strip()
    except ValueError:
        return None


def _open(profile: bytes) -> ImageCms.ImageCmsProfile | None:
    if profile == DEFAULT_CMYK:
        profile = _default_cmyk()
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(profile))
    except (OSError, ImageCms.PyCMSError, TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=16)
def _transform(profile: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform | None:
    source = _open(profile)
    if source is None or _space(source) != _SPACE_FOR_MODE[in_mode]:
        return None
    try:
        return ImageCms.buildTransform(
            source, _srgb(), in_mode, out_mode, renderingIntent=_intent(profile)
        )
    except ImageCms.PyCMSError:
        return None


def _intent(profile: bytes) -> ImageCms.Intent:
    """Relative colorimetric for the built-in CMYK profile (measured, see the module's notes);
    perceptual for a profile a file carries, which its maker may have tuned for that intent."""
    if profile == DEFAULT_CMYK:
        return ImageCms.Intent.RELATIVE_COLORIMETRIC
    return ImageCms.Intent.PERCEPTUAL


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.cache
def _default_cmyk() -> bytes:
    """The built-in FOGRA39 profile (57 KB, read once per worker process)."""
    return resources.files("thumbd.render").joinpath(_FOGRA39).read_bytes()
