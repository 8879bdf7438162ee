"""JPEG and MPO (a JPEG with more pictures appended): shrink-on-load with Image.draft().

libjpeg can decode at 1/2, 1/4 or 1/8 scale by DCT scaling, for a fraction of a full decode's
CPU: what makes libvips' thumbnail and sharp fast. The generic Pillow decoder calls `draft()`
before any pixel access.
"""

from __future__ import annotations

from PIL import Image, ImageFile

from thumbd.render.decoders import largest_scale
from thumbd.render.orientation import exif_orientation, oriented
from thumbd.render.spec import Box, RenderSpec

# Pillow format names this module's rules apply to.
FORMATS = ("JPEG", "MPO")

# The draft asks for this many times the largest thumbnail, so LANCZOS still has real pixels
# to average: the result cannot be told from a full decode. Twice, less a tenth: DCT scales
# are powers of two, and a 12 MP phone photo taken upright (3024 px wide) gives 378 px at 1/8,
# 1.89 times 200. Decoding it at 1/8 instead of 1/4 costs 35-40% less CPU and its 200 px
# thumbnail moves 0.05-0.35 dB further from the ideal (docs/benchmarks.md); at 1.6 times
# (a 640 px photo at 1/2) the loss is 5 dB, so the margin stays near two.
DRAFT_MARGIN = 1.8


def draft(im: ImageFile.ImageFile, spec: RenderSpec) -> Box | None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the thumbnails are that much smaller.

    Must run before any pixel access. Returns the source's box in the drafted image (draft
    rounds the size up), for an exact resize; None when it is not a JPEG or not drafted.
    """
    if im.format not in FORMATS:
        return None
    # JPEG decoders do not orient, so the tag read now is the one load() will leave.
    scale = largest_scale(oriented(im.size, exif_orientation(im)), spec)
    w, h = im.size  # a scale is the same both ways round: no need to orient the request
    want = max(1, round(DRAFT_MARGIN * w * scale)), max(1, round(DRAFT_MARGIN * h * scale))
    drafted = im.draft(None, want)  # None: keep the decoded mode
    return drafted[1] if drafted is not None else None


def is_inverted_cmyk(im: Image.Image) -> bool:
    """Pillow reads every CMYK JPEG as Adobe's inverted kind; only one with Adobe's marker is.
    True when the pixels must be inverted back."""
    return im.mode == "CMYK" and im.format in FORMATS and "adobe" not in im.info
