"""HEIC/HEIF (the iPhone's default) through pillow-heif (libheif).

`register()` makes Pillow's Image.open know HEIF; the generic decoder (decoders/pillow.py) then
decodes the primary image in full. AVIF is Pillow's own plugin (pillow-heif has no AV1 decoder).
"""

from __future__ import annotations

from typing import IO

from thumbd.render.decoders import Decoded
from thumbd.render.spec import RenderSpec


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
    """None: the generic decoder reads the primary image."""
    return None
