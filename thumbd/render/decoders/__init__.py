"""Decoders: from a source file to a picture the pipeline can resize, one module per family.

The interface
-------------
A decoder is a module with one function::

    def decode(f: IO[bytes], spec: RenderSpec) -> Decoded | None

- `f` is the source, open at its start, seekable (a regular file or a BytesIO); it stays open
  until the pipeline has made every thumbnail, so `Decoded.animation` may read it lazily.
- `spec` says what will be made: `largest_scale(upright_size, spec)` is the most any thumbnail
  needs, for decoders that can shrink while decoding (JPEG's DCT scaling, an embedded preview).
  `spec.max_pixels` is the limit on the source's pixels: refuse before decoding anything larger.
- It returns a `Decoded`, or None for "not mine after all": the generic Pillow decoder then reads
  the file from its start (the HEIF fast path does this when the embedded thumbnail will not do).
- Bad input raises `Refused(kind, reason)` (thumbd.render.source), never anything else: a reason
  a person understands, naming what is wrong. What a decoder library prints must not reach
  stderr raw. Anything else raised is taken for a bug in thumbd.

A decoder for video or RAW returns the simplest `Decoded`: `Decoded(picture, facts={...})` with
`picture` already upright and RGB (orientation 1, no profile: taken as sRGB); `facts` are added
to the source's entry in the JSON index (`<stem>.json`), e.g. {"duration_s": 12.5}.

Choosing a decoder
------------------
`decoder_for(name, head)` picks by content first (`head`: the file's first bytes), then by the
file name's extension, else the generic Pillow decoder (decoders/pillow.py, which knows JPEG,
PNG, GIF, WebP, TIFF, BMP, HEIF and AVIF by content). A route's module is imported only when a
file takes it, so a worker that never sees a video never imports its decoder. Add a decoder by
adding a `Route` to `ROUTES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, cast

from PIL import Image

from thumbd.render import encode, formats, sizing
from thumbd.render.source import Refused
from thumbd.render.spec import Box, FailKind, RenderSpec, Size

__all__ = [
    "ROUTES",
    "Animation",
    "Decode",
    "Decoded",
    "Refused",
    "Route",
    "decode",
    "decoder_for",
    "largest_scale",
    "largest_side",
]


@dataclass(frozen=True, slots=True)
class Animation:
    """Every frame of an animated source, decoded lazily while the pipeline consumes them."""

    frames: Iterator[tuple[Image.Image, int]]  # (picture, duration ms), the first one too
    loop: int | None  # GIF/WebP loop count; None: not given
    gif: bool  # the source is a GIF: stays one unless the configuration asks for WebP


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded source, for the pipeline.

    `picture` is in mode L, LA, RGB, RGBA or CMYK, stored the way `orientation` says (1: upright).
    It may be smaller than the source (decoded shrunk, or an embedded preview): `size` is then
    the source's own upright size (for the targets and the index) and `box` the region of
    `picture` that shows the whole source (None: all of it).
    """

    picture: Image.Image
    orientation: int = 1  # EXIF orientation still to apply
    size: Size | None = None  # the source's upright size; None: `picture`'s, turned upright
    box: Box | None = None
    profile: bytes | None = None  # colour profile to convert from (colour.py); None: sRGB
    metadata: encode.Metadata = field(default_factory=encode.Metadata)  # what is kept
    facts: Mapping[str, object] = field(default_factory=dict)  # extra facts for the index
    animation: Animation | None = None  # set: render every frame (`picture` is the first)

    @property
    def upright_size(self) -> Size:
        if self.size is not None:
            return self.size
        w, h = self.picture.size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)


Decode = Callable[[IO[bytes], RenderSpec], Decoded | None]


@dataclass(frozen=True, slots=True)
class Route:
    """Which files a decoder module takes: by content (`sniff` on the first bytes), or by name."""

    module: str  # imported on first use; has `decode` (see the module docstring)
    extensions: frozenset[str] = frozenset()  # lower case, with the dot
    sniff: Callable[[bytes], bool] | None = None


HEAD_BYTES = 64  # what a sniff sees


def _is_heif(head: bytes) -> bool:
    """An ISO-BMFF file whose brands say HEIF still image (HEVC coded): not AVIF, not video."""
    if head[4:8] != b"ftyp":
        return False
    size = int.from_bytes(head[0:4], "big")
    brands = {head[i : i + 4] for i in range(8, min(size, len(head)) - 3, 4) if i != 12}
    return bool(brands & _HEIF_BRANDS) and not brands & _AVIF_BRANDS


_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

ROUTES: tuple[Route, ...] = (
    Route(
        "thumbd.render.decoders.heif",
        frozenset({".heic", ".heif", ".hif"}),
        _is_heif,
    ),
    # DNG and most RAW formats are TIFF inside: by name, before the generic TIFF reader.
    Route("thumbd.render.decoders.raw", formats.RAW_EXTENSIONS),
    Route("thumbd.render.decoders.video", formats.VIDEO_EXTENSIONS),
)
_GENERIC = "thumbd.render.decoders.pillow"


def decoder_for(name: str, head: bytes) -> Decode:
    """The decoder for a file called `name` whose first bytes are `head`."""
    ext = name[name.rfind(".") :].lower() if "." in name else ""
    chosen = next((r for r in ROUTES if r.sniff is not None and r.sniff(head)), None)
    if chosen is None:
        chosen = next((r for r in ROUTES if ext in r.extensions), None)
    return _load(chosen.module if chosen is not None else _GENERIC)


def _load(module: str) -> Decode:
    return cast(Decode, importlib.import_module(module).decode)


def generic() -> Decode:
    """The Pillow decoder, for what no route takes and what a route hands back."""
    return _load(_GENERIC)


def largest_side(spec: RenderSpec) -> int:
    """The longest side any thumbnail of `spec` can have whatever the picture's aspect, for a
    decoder that must choose a size before it knows the picture's (a RAW preview, a video's
    poster): a configured width is a portrait thumbnail's short side (3:2, so 1.5 times)."""
    boxes = [w * 3 // 2 for w in spec.widths]
    boxes += [max(s.width, s.height) if s.height else s.width * 3 // 2 for s in spec.sizes]
    return max(boxes)


def largest_scale(upright: Size, spec: RenderSpec) -> float:
    """The most thumbnail pixels per source pixel any target of `spec` needs (at most 1)."""
    return max(t.scale for t in sizing.targets(upright, spec.widths, spec.sizes))


def decode(f: IO[bytes], name: str, spec: RenderSpec) -> Decoded:
    """`f` decoded by the decoder its content or `name` calls for, else by Pillow."""
    try:
        head = f.read(HEAD_BYTES)
        f.seek(0)
    except OSError as e:
        raise Refused(FailKind.UNREADABLE, f"cannot read file: {e.strerror or e}") from e
    decoded = decoder_for(name, head)(f, spec)
    if decoded is None:  # handed back: the generic decoder reads it from the start
        f.seek(0)
        decoded = generic()(f, spec)
    assert decoded is not None  # the generic decoder decodes or refuses
    return decoded
