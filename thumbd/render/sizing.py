"""Thumbnail geometry: from configured widths and named sizes to exact pixel sizes and crops.

All sizes and boxes here are in upright source pixels (after EXIF orientation). Nothing is ever
upscaled: a source smaller than a size gives a thumbnail at its own scale.

- width: `width` wide, the height keeping the aspect ratio (the configured widths);
- fit: the largest size inside `width` x `height` (height 0: no limit, the same as width);
- cover: fills `width` x `height` exactly, cropping what sticks out, at the centre or, with
  `crop = "attention"`, where the picture is busiest (edges, skin tones, saturated colour: the
  cues libvips' attention crop uses).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from PIL import Image, ImageChops, ImageFilter

from thumbd.render.spec import Box, NamedSize, Size


@dataclass(frozen=True, slots=True)
class Target:
    """One thumbnail to make."""

    label: str  # what the output is named after: the width, or the size's name
    width: int  # the configured width (a named size's box width)
    size: Size  # the thumbnail's pixel size
    scale: float  # thumbnail pixels per source pixel
    crop: Box | None = None  # the part of the source it shows; None: all of it
    attention: bool = False  # place `crop` by saliency rather than at the centre


def targets(source: Size, widths: tuple[int, ...], sizes: tuple[NamedSize, ...]) -> list[Target]:
    """One target per width, then one per named size, in configuration order."""
    made = [_fit(source, str(w), w, 0) for w in widths]
    for s in sizes:
        if s.mode == "cover":
            made.append(_cover(source, s))
        else:
            made.append(_fit(source, s.name, s.width, s.height if s.mode == "fit" else 0))
    return made


def _fit(source: Size, label: str, width: int, height: int) -> Target:
    sw, sh = source
    if sw <= width and (height == 0 or sh <= height):
        return Target(label, width, source, 1.0)
    if height == 0 or width / sw <= height / sh:
        # Width decides: exactly `width` wide (the seed's rule, rounding the height).
        return Target(label, width, (width, max(1, round(sh * width / sw))), width / sw)
    return Target(label, width, (max(1, round(sw * height / sh)), height), height / sh)


def _cover(source: Size, s: NamedSize) -> Target:
    sw, sh = source
    scale = max(s.width / sw, s.height / sh)
    if scale <= 1:
        size = (min(s.width, max(1, round(sw * scale))), min(s.height, max(1, round(sh * scale))))
        cw, ch = min(sw, size[0] / scale), min(sh, size[1] / scale)
    else:
        # Too small to fill the box: the box's shape at the source's own scale.
        scale = 1.0
        cw, ch = min(sw, sh * s.width / s.height), min(sh, sw * s.height / s.width)
        size = (max(1, round(cw)), max(1, round(ch)))
    crop = ((sw - cw) / 2, (sh - ch) / 2, (sw + cw) / 2, (sh + ch) / 2)
    return Target(s.name, s.width, size, scale, crop, attention=s.crop == "attention")


# ---------------------------------------------------------------------------------------------
# Orientation: boxes between upright and stored pixels


def stored_box(box: Box, upright: Size, orientation: int) -> Box:
    """`box` in upright pixels -> the same region in the stored (unrotated) image.

    Orientation o says how the stored image is turned to make it upright (as
    ImageOps.exif_transpose does); this maps the other way.
    """
    w, h = upright
    x0, y0, x1, y1 = box
    corners = [_to_stored(x, y, w, h, orientation) for x, y in ((x0, y0), (x1, y1))]
    (a, b), (c, d) = corners
    return min(a, c), min(b, d), max(a, c), max(b, d)


def _to_stored(x: float, y: float, w: int, h: int, orientation: int) -> tuple[float, float]:
    return {
        1: (x, y),
        2: (w - x, y),
        3: (w - x, h - y),
        4: (x, h - y),
        5: (y, x),
        6: (y, w - x),
        7: (h - y, w - x),
        8: (h - y, x),
    }[orientation]


# ---------------------------------------------------------------------------------------------
# Attention


_SALIENCY_SIDE = 96  # pixels on the longer side of the map: plenty to place a crop


def place_by_attention(target: Target, upright: Image.Image, source: Size) -> Target:
    """`target` with its crop moved (along the axis it crops) to the busiest region.

    `upright` is any upright, sRGB rendering of the whole source; it is shrunk to a small map.
    """
    assert target.crop is not None
    x0, y0, x1, y1 = target.crop
    cw, ch = x1 - x0, y1 - y0
    sw, sh = source
    energy = saliency(upright)
    if cw < sw - 0.5:
        start = _best_window(_profile(energy, horizontal=True), cw / sw)
        return replace(target, crop=(start * sw, y0, start * sw + cw, y1))
    if ch < sh - 0.5:
        start = _best_window(_profile(energy, horizontal=False), ch / sh)
        return replace(target, crop=(x0, start * sh, x1, start * sh + ch))
    return target  # nothing is cropped


def saliency(im: Image.Image) -> Image.Image:
    """An L map, brighter where a person looks first: edges, skin tones, saturated colour."""
    small = im.convert("RGB")
    small.thumbnail((_SALIENCY_SIDE, _SALIENCY_SIDE), Image.Resampling.BOX)
    luma = small.convert("L")
    # Pillow leaves a 3x3 filter's outermost pixels unfiltered (the picture itself), and every
    # picture's frame looked busy: filter a copy with its border repeated, keep the inside.
    w, h = luma.size
    edges = _repeat_border(luma).filter(ImageFilter.FIND_EDGES).crop((1, 1, w + 1, h + 1))
    edges = edges.point(lambda v: min(255, v * 2))
    _, saturation, value = small.convert("HSV").split()
    # Saturated and not dark: vivid colour, not the noise of shadows.
    vivid = ImageChops.multiply(saturation, value).point(lambda v: 255 if v > 90 else v)
    _, cb, cr = small.convert("YCbCr").split()
    skin = ImageChops.multiply(
        cb.point(lambda v: 255 if 77 <= v <= 127 else 0),
        cr.point(lambda v: 255 if 133 <= v <= 173 else 0),
    )
    energy = ImageChops.add(ImageChops.add(edges, vivid, scale=2), skin, scale=2)
    # Smooth a little, so one sharp line does not outweigh a whole textured object.
    return energy.filter(ImageFilter.BoxBlur(1))


def _repeat_border(im: Image.Image) -> Image.Image:
    """`im` with one pixel more on every side, each a copy of its neighbour inside: a 3x3 filter
    sees the picture go on past its edges. (A resize to the padded size is no copy: it shifts
    the outer rows and columns by up to a pixel, and a line meeting the border made edges.)"""
    w, h = im.size
    out = Image.new(im.mode, (w + 2, h + 2))
    out.paste(im, (1, 1))
    out.paste(im.crop((0, 0, 1, h)), (0, 1))
    out.paste(im.crop((w - 1, 0, w, h)), (w + 1, 1))
    out.paste(out.crop((0, 1, w + 2, 2)), (0, 0))
    out.paste(out.crop((0, h, w + 2, h + 1)), (0, h + 1))
    return out


def _profile(energy: Image.Image, *, horizontal: bool) -> list[float]:
    """Mean energy per column (horizontal) or per row."""
    w, h = energy.size
    line = energy.resize((w, 1) if horizontal else (1, h), Image.Resampling.BOX)  # mode L
    return [float(v) for v in line.tobytes()]


def _best_window(values: list[float], fraction: float) -> float:
    """Where (0..1) a window `fraction` of `values` long holds the most; ties go to the centre."""
    n = len(values)
    span = max(1, min(n, round(fraction * n)))
    window = sum(values[:span])
    best, best_at = window, 0
    centre = (n - span) / 2
    for start in range(1, n - span + 1):
        window += values[start + span - 1] - values[start - 1]
        better = window > best + 1e-9
        tie_nearer = abs(window - best) <= 1e-9 and abs(start - centre) < abs(best_at - centre)
        if better or tie_nearer:
            best, best_at = window, start
    return min(best_at / n, 1.0 - fraction)
