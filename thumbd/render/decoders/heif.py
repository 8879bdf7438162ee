"""HEIC/HEIF (the iPhone's default) through pillow-heif (libheif), with a thumbnail fast path.

A phone's HEIC carries a small embedded thumbnail (an iPhone's: 240x320 of a 12 MP picture).
Decoding it costs about 1 % of decoding the picture, so `decode()` uses it whenever it is at
least as large as everything the render must make (every configured width and named size): the
rule of libvips' thumbnail (libvips/resample/thumbnail.c), which never enlarges a preview.

Only a thumbnail that is the same picture, smaller, will do. Anything else hands the file back
to the generic decoder (decoders/pillow.py), which decodes the primary image in full:

- another rotation or mirroring than the primary's (libheif applies each item's own irot/imir;
  a thumbnail written without the primary's rotation comes out sideways, libheif #548);
- another crop (clap) or an aspect ratio more than 1 % off the primary's;
- bars: uniform bands on opposite sides (letterboxed thumbnails of some Sony and Canon files);
- another colour profile than the primary's (the primary's ICC or nclx is what gets applied);
- another mode (an alpha channel only one of them has), a decode error, a file pillow-heif
  cannot open at all, or more than one top-level image (the generic decoder picks the largest).

`register()` makes Pillow's Image.open know HEIF for that generic path. AVIF is Pillow's own
plugin (pillow-heif has no AV1 decoder); an AVIF file never comes here.
"""

from __future__ import annotations

from typing import IO, Any

from PIL import Image

from thumbd.render import apple, colour, encode
from thumbd.render.decoders import Decoded, largest_scale
from thumbd.render.spec import RenderSpec, Size

# What pillow-heif raises for a file or an item libheif cannot read.
_HEIF_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    RuntimeError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    MemoryError,  # the generic decoder then reports it
)
# Without pillow-heif too: the generic decoder then says HEIF is not a format it reads.
_OPEN_ERRORS: tuple[type[BaseException], ...] = (ImportError, *_HEIF_ERRORS)
_MODES = ("RGB", "RGBA", "L", "LA")  # what the pipeline takes as it is
_ASPECT_TOLERANCE = 0.01
_PADDING_CLAP = 64  # a clap cutting less than this off the right/bottom only drops coding padding


def register() -> bool:
    """Teach Pillow HEIF when pillow-heif is installed; False when it is not."""
    try:
        import pillow_heif
    except ImportError:
        return False
    # Pillow never decodes embedded thumbnails, depth maps or auxiliary images: only the picture.
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    return True


def decode(f: IO[bytes], spec: RenderSpec) -> Decoded | None:
    """The embedded thumbnail as the picture, when it will do; None: decode the primary."""
    try:
        import pillow_heif

        heif_file = pillow_heif.open_heif(f, convert_hdr_to_8bit=True, remove_stride=False)
        if len(heif_file) != 1:
            return None
        primary = heif_file[heif_file.primary_index]
    except _OPEN_ERRORS:
        return None  # the generic decoder says what is wrong with it
    size: Size = primary.size  # upright: libheif applies irot/imir/clap
    if size[0] * size[1] > spec.max_pixels or primary.mode not in _MODES:
        return None  # the generic decoder refuses or converts it
    picture = _thumbnail(primary, _needed(size, spec))
    if picture is None:
        return None
    # The primary's metadata and colour apply to its thumbnail. pillow-heif resets the EXIF
    # orientation to 1 (libheif has turned the pixels by HEIF's own irot/imir), as for the
    # primary on the generic path.
    info: dict[str | tuple[int, int], Any] = {}
    info.update(primary.info)
    pillow_heif.misc.set_orientation(info)
    picture.info = info
    return Decoded(
        picture,
        size=size,
        profile=colour.profile_to_convert(picture),
        metadata=encode.kept_metadata(picture, spec.keep_metadata),
        facts=apple.facts(picture),
    )


def _needed(size: Size, spec: RenderSpec) -> tuple[float, float]:
    """The pixels the largest thumbnail takes of the whole source, across and down."""
    scale = largest_scale(size, spec)
    return size[0] * scale, size[1] * scale


def _thumbnail(primary: Any, needed: tuple[float, float]) -> Image.Image | None:
    """The smallest embedded thumbnail that covers `needed` and is the primary, shrunk."""
    candidates = []
    for index in range(_thumbnail_count(primary)):
        try:
            thumbnail = primary.get_thumbnail(index)
        except _HEIF_ERRORS:
            continue
        if _covers(thumbnail.size, needed) and _same_picture(thumbnail, primary):
            candidates.append(thumbnail)
    for thumbnail in sorted(candidates, key=lambda t: t.size[0] * t.size[1]):
        try:
            picture: Image.Image = thumbnail.to_pillow()
        except _HEIF_ERRORS:
            continue  # a corrupt thumbnail: try the next, then the primary
        if picture.size == thumbnail.size and not letterboxed(picture):
            return picture
    return None


def _thumbnail_count(primary: Any) -> int:
    # info["thumbnails"] stays empty while the Pillow plugin is registered with thumbnails off:
    # ask libheif's handle. Without it (another pillow-heif), no fast path.
    ids = getattr(primary._c_image, "thumbnails", None)
    return len([i for i in ids if i is not None]) if ids is not None else 0


def _covers(thumbnail: Size, needed: tuple[float, float]) -> bool:
    """At least as large as every thumbnail to make (half a pixel: what rounding gives)."""
    return thumbnail[0] + 0.5 >= needed[0] and thumbnail[1] + 0.5 >= needed[1]


def _same_picture(thumbnail: Any, primary: Any) -> bool:
    """The thumbnail is the primary shrunk: same mode, shape, turns, crop and colour."""
    (w, h), (tw, th) = primary.size, thumbnail.size
    if thumbnail.mode != primary.mode or tw >= w or th >= h or not (tw and th):
        return False
    if abs(tw * h - th * w) > _ASPECT_TOLERANCE * w * th:  # |tw/th - w/h| > 1 % of w/h
        return False
    turns = _transformations(primary), _transformations(thumbnail)
    if turns[0] is None or turns[1] is None:
        return False  # cannot tell: do not risk a sideways thumbnail
    if _orientation(turns[0]) != _orientation(turns[1]):
        return False
    if not _same_crop(_crops(turns[0]), _crops(turns[1])):
        return False
    return _same_colour(thumbnail.info, primary.info)


def _transformations(image: Any) -> tuple[tuple[Any, ...], ...] | None:
    """libheif's transformations of an item, in order: ("irot", degrees), ("imir", axis),
    ("clap", left, top, right, bottom, width, height) (borders cut off a coded size)."""
    found = getattr(image._c_image, "transformations", None)
    return tuple(found) if isinstance(found, tuple | list) else None


def _orientation(turns: tuple[tuple[Any, ...], ...]) -> tuple[tuple[Any, ...], ...]:
    # A rotation by 0 is no rotation (some writers store irot 0 on the primary only).
    return tuple(t for t in turns if t[0] != "clap" and t != ("irot", 0))


def _crops(turns: tuple[tuple[Any, ...], ...]) -> list[tuple[float, float, float, float]]:
    """Each real crop as fractions of its coded size cut off (left, top, right, bottom); a clap
    anchored top-left that cuts less than a coding block off the right and bottom only drops
    the encoder's padding, and is no crop."""
    crops = []
    for t in turns:
        if t[0] != "clap" or len(t) != 7:
            continue
        left, top, right, bottom, width, height = (float(v) for v in t[1:])
        if not left and not top and right < _PADDING_CLAP and bottom < _PADDING_CLAP:
            continue
        if width > 0 and height > 0:
            crops.append((left / width, top / height, right / width, bottom / height))
    return crops


def _same_crop(
    a: list[tuple[float, float, float, float]], b: list[tuple[float, float, float, float]]
) -> bool:
    if len(a) != len(b):
        return False
    return all(
        abs(x - y) <= _ASPECT_TOLERANCE
        for p, q in zip(a, b, strict=True)
        for x, y in zip(p, q, strict=True)
    )


def _same_colour(thumbnail: dict[str, Any], primary: dict[str, Any]) -> bool:
    """No colour description of its own, or the primary's: the primary's then applies."""
    for key in ("icc_profile", "nclx_profile"):
        own = thumbnail.get(key)
        if own and own != primary.get(key):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Bars


_BAR_SPREAD = 12  # per channel: coding noise in a flat band
_BAR_MIN = 2  # rows or columns: one uniform line at an edge is not a bar
_BAR_MAX_FRACTION = 0.4  # no further in from each side


def letterboxed(im: Image.Image) -> bool:
    """Uniform bands of one colour on two opposite sides (letterbox or pillarbox bars)."""
    rgb = im.convert("RGB")
    w, h = rgb.size
    return _bars(rgb, [(0, y, w, y + 1) for y in range(h)]) or _bars(
        rgb, [(x, 0, x + 1, h) for x in range(w)]
    )


def _bars(im: Image.Image, lines: list[tuple[int, int, int, int]]) -> bool:
    """Whether the first and last few `lines` (boxes of one row or column) are flat bands of
    the same colour, at least _BAR_MIN deep on both sides."""
    deepest = max(_BAR_MIN, int(len(lines) * _BAR_MAX_FRACTION))
    near = _band(im, lines[:deepest])
    far = _band(im, lines[::-1][:deepest])
    if near is None or far is None:
        return False
    return all(abs(a - b) <= _BAR_SPREAD for a, b in zip(near, far, strict=True))


def _band(im: Image.Image, lines: list[tuple[int, int, int, int]]) -> tuple[float, ...] | None:
    """The colour of a flat band of at least _BAR_MIN of `lines` from the edge, ending before
    the last of them; None if there is none."""
    depth = 0
    colour_of_band: tuple[float, ...] | None = None
    for box in lines:
        line = im.crop(box)
        extrema = line.getextrema()
        if any(hi - lo > _BAR_SPREAD for lo, hi in extrema):  # type: ignore[misc]
            break
        mid = tuple((lo + hi) / 2 for lo, hi in extrema)  # type: ignore[misc]
        if colour_of_band is None:
            colour_of_band = mid
        elif any(abs(a - b) > _BAR_SPREAD for a, b in zip(mid, colour_of_band, strict=True)):
            break
        depth += 1
    else:
        return None  # flat all the way in: that is the picture, not a bar
    return colour_of_band if depth >= _BAR_MIN else None
