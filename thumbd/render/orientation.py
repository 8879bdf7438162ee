"""EXIF orientation: reading it, and turning sizes and images by it.

Orientation o (1-8) says how a stored image is turned to make it upright, as
ImageOps.exif_transpose does. Decoders that apply it themselves (libheif applies HEIF's own
irot/imir, Pillow 13's TIFF decoder the EXIF tag) report 1.
"""

from __future__ import annotations

from PIL import ExifTags, Image

from thumbd.render.decoders.errors import INPUT_ERRORS
from thumbd.render.spec import Size

# How to make a stored image upright, by EXIF orientation (as ImageOps.exif_transpose does).
UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_AXES = frozenset({5, 6, 7, 8})


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) still to apply; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except INPUT_ERRORS:
        return 1  # a broken EXIF block must not cost the picture
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented(size: Size, orientation: int) -> Size:
    """`size` turned by `orientation` (works both ways: stored <-> upright)."""
    return (size[1], size[0]) if orientation in SWAPS_AXES else size


def upright(im: Image.Image, orientation: int) -> Image.Image:
    """`im` (stored orientation) turned upright."""
    method = UPRIGHT.get(orientation)
    return im if method is None else im.transpose(method)
