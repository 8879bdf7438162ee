"""The settings fingerprint: which render settings made a source's thumbnails.

Each done record keeps the fingerprint of the settings it was rendered with (store.state);
`thumbd status` counts the sources whose fingerprint is not the configuration's (made with older
settings) and `thumbd redo --stale` renders only those. It is computed from the configuration,
not from the RenderSpec, so that the commands need no Pillow to compute it (the spec's
background colour is parsed by Pillow); both come from the same `[thumbnails]` values.

Only what changes a thumbnail's pixels, format or names counts: a gallery, `on_delete` or
`live_photos` changes which files there are, not what a thumbnail looks like. REVISION is
raised when thumbd itself changes how it renders (so `redo --stale` then renders everything).
"""

from __future__ import annotations

import functools
import hashlib

from thumbd.config import ThumbnailsConfig

REVISION = 1

# [thumbnails] keys that change no thumbnail.
_NOT_RENDERING = frozenset({"gallery", "on_delete", "live_photos"})


@functools.lru_cache(maxsize=8)
def fingerprint(thumbnails: ThumbnailsConfig) -> str:
    """12 hex digits naming the rendering settings of `thumbnails` (and REVISION)."""
    fields = {k: v for k, v in vars(thumbnails).items() if k not in _NOT_RENDERING}
    # The same settings written another way are the same settings.
    fields["widths"] = sorted(set(thumbnails.widths))
    fields["keep_metadata"] = sorted(set(thumbnails.keep_metadata))
    fields["background"] = thumbnails.background.strip().lower()
    text = repr((REVISION, sorted(fields.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
