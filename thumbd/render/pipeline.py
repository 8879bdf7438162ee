"""Rendering: decode once, orient, convert colour, make every size, encode.

`render()` is pure and top level so that it pickles to a worker process: a source path in,
thumbnails as bytes out, no I/O besides reading the source. Everything that must survive a
crash (writing, recording) happens in the daemon process.

Opening the source safely is render/source.py; decoding is render/decoders/ (one module per
format family, chosen by content or name); this module resizes and encodes what they give.

Bad input never raises: every failure is a `RenderResult` whose `failure` a person understands.
Only bugs in this module raise.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import IO

from PIL import Image, ImageColor, ImageFilter

from thumbd import testhooks
from thumbd.config import Config, ConfigError
from thumbd.output.writer import thumbnail_name
from thumbd.render import colour, decoders, digest, encode, placeholder, sizing
from thumbd.render.decoders import Animation
from thumbd.render.decoders.jpeg import DRAFT_MARGIN as _DRAFT_MARGIN
from thumbd.render.decoders.pillow import ALLOWED_FORMATS, extrema
from thumbd.render.decoders.pillow import renderable as _renderable
from thumbd.render.orientation import oriented, upright
from thumbd.render.sizing import Target
from thumbd.render.source import Refused, refusal, with_source
from thumbd.render.spec import (
    Box,
    FailKind,
    NamedSize,
    RenderResult,
    RenderSpec,
    Signature,
    Size,
    Thumbnail,
)

# Names other modules (and the benchmarks) have always imported from here.
__all__ = [
    "ALLOWED_FORMATS",
    "_DRAFT_MARGIN",
    "_renderable",
    "read_source",
    "render",
    "render_bytes",
    "spec_from_config",
]

_REDUCING_GAP = 3.0


def spec_from_config(config: Config) -> RenderSpec:
    """The daemon's spec: `[thumbnails]` plus `[resize] max_pixels`. Checks what only the
    render stage can (a colour Pillow knows, an AVIF encoder), naming the file and the key."""
    t = config.thumbnails
    return RenderSpec(
        widths=t.widths,
        quality=t.quality,
        max_pixels=config.resize.max_pixels,
        sizes=tuple(
            NamedSize(
                s.name,
                s.width,
                s.height,
                s.mode,
                "attention" if s.crop == "attention" else "centre",
            )
            for s in t.size
        ),
        format=_output_format(config),
        webp_quality=t.webp_quality,
        avif_quality=t.avif_quality,
        progressive=t.progressive,
        background=_rgb(config),
        keep_metadata=t.keep_metadata,
        animated=t.animated,
        sharpen=t.sharpen,
        index=t.index,
    )


def _rgb(config: Config) -> tuple[int, int, int]:
    value = config.thumbnails.background
    try:
        r, g, b = ImageColor.getrgb(value)[:3]
    except ValueError:
        raise _setting_error(
            config, "background", 'a colour ("white", "#rrggbb", "rgb(r, g, b)")', value
        ) from None
    return r, g, b


def _output_format(config: Config) -> str:
    value = config.thumbnails.format
    if value == "avif" and not encode.avif_available():
        expected = "a format this Pillow can write (it has no AVIF support: Pillow 11.3 or later)"
        raise _setting_error(config, "format", expected, value)
    return value


def _setting_error(config: Config, key: str, expected: str, value: str) -> ConfigError:
    where = config.source or "the configuration"
    return ConfigError(f"{where}: [thumbnails] {key}: expected {expected}, got {value!r}")


def _encoding(spec: RenderSpec) -> encode.Options:
    return encode.Options(
        format=spec.format,
        jpeg_quality=spec.quality,
        webp_quality=spec.webp_quality,
        avif_quality=spec.avif_quality,
        progressive=spec.progressive,
        background=spec.background,
    )


# ---------------------------------------------------------------------------------------------
# Entry point


def render(path: str, spec: RenderSpec) -> RenderResult:
    """Read `path` once and make one thumbnail per width of `spec`, then one per named size."""

    def make(f: IO[bytes], signature: Signature, started: float) -> RenderResult:
        testhooks.trip(f)
        if (escaped := testhooks.escape(f)) is not None:  # tests only: the sandbox's proof
            raise Refused(FailKind.UNREADABLE, escaped)
        result = _render_source(f, spec, os.path.basename(path), signature, started)
        return replace(result, digest=digest.of_file(f)) if result.ok else result

    return with_source(path, make)


def render_bytes(
    data: bytes, spec: RenderSpec, name: str, signature: Signature | None = None
) -> RenderResult:
    """render() of a source already read into memory, for a worker that cannot see the watched
    folder (a Dask cluster). `name` is the source's file name (render() uses it in the index);
    `signature` is what the reader saw, passed through to the result."""
    started = time.process_time()
    try:
        if not data:
            raise Refused(FailKind.EMPTY, "empty file (0 bytes)")
        f = io.BytesIO(data)
        testhooks.trip(f)
        result = _render_source(f, spec, name, signature, started)
        return replace(result, digest=digest.of_bytes(data)) if result.ok else result
    except Refused as refused:
        return refusal(refused, signature, started)


def read_source(path: str) -> tuple[Signature, bytes] | RenderResult:
    """The whole source and the signature it was read at, to ship to render_bytes(); or the
    result render() gives for a file it cannot read."""

    def read(f: IO[bytes], signature: Signature, _started: float) -> tuple[Signature, bytes]:
        try:
            return signature, f.read()
        except OSError as e:
            raise Refused(FailKind.UNREADABLE, f"cannot read file: {e.strerror or e}") from e

    return with_source(path, read)


def _render_source(
    f: IO[bytes], spec: RenderSpec, name: str, signature: Signature | None, started: float
) -> RenderResult:
    source_size, thumbnails, index, facts = _render_file(f, spec, name)
    return RenderResult(
        signature=signature,
        source_size=source_size,
        thumbnails=thumbnails,
        cpu_seconds=time.process_time() - started,
        index=index,
        facts=facts,
    )


@dataclass(frozen=True, slots=True)
class _Source:
    """What decoding learnt about a source, for everything after it."""

    name: str  # file name, for the index
    size: Size  # upright
    orientation: int
    box: Box | None  # the source's box in the decoded picture
    profile: bytes | None  # to convert from; None: already sRGB
    metadata: encode.Metadata
    facts: Mapping[str, object]  # the decoder's, for the index


Rendered = tuple[Size, tuple[Thumbnail, ...], bytes | None, Mapping[str, object]]


def _render_file(f: IO[bytes], spec: RenderSpec, name: str) -> Rendered:
    if not spec.widths and not spec.sizes:
        raise ValueError("RenderSpec has no widths and no sizes")  # a bug, not a bad file
    decoded = decoders.decode(f, name, spec)
    source = _Source(
        name=name,
        size=decoded.upright_size,
        orientation=decoded.orientation,
        box=decoded.box,
        profile=decoded.profile,
        metadata=decoded.metadata,
        facts=decoded.facts,
    )
    targets = sizing.targets(source.size, spec.widths, spec.sizes)
    if decoded.animation is not None:
        return _render_animation(decoded.animation, source, targets, spec)
    return _render_still(decoded.picture, source, targets, spec)


def _without_opaque_alpha(im: Image.Image) -> Image.Image:
    """Drop an alpha channel that is 255 everywhere, so the thumbnail can be a JPEG."""
    if im.mode not in ("LA", "RGBA"):
        return im
    lo, _ = extrema(im.getchannel("A"))
    if lo < 255:
        return im
    return im.convert("L" if im.mode == "LA" else "RGB")


# ---------------------------------------------------------------------------------------------
# Sizes


class _Pipeline:
    """Turns one decoded picture (or animation frame) into every target's image.

    The first resize makes a base at the largest scale any target needs; colour conversion
    happens there, at thumbnail size. Then targets are made largest first, each whole-picture
    one from the previous (the cascade), crops from the smallest whole picture still at least
    their scale. Everything is resized in the stored orientation and turned upright at the end:
    the same picture as turning the full image first, at a fraction of the cost.
    """

    def __init__(self, source: _Source, targets: list[Target], spec: RenderSpec, *, still: bool):
        self.source = source
        self.targets = targets
        self.spec = spec
        self.still = still
        self.order = sorted(range(len(targets)), key=lambda i: targets[i].scale, reverse=True)
        self.placed = False

    def run(self, picture: Image.Image, box: Box | None) -> tuple[list[Image.Image], Image.Image]:
        """(one upright sRGB image per target, in target order; the upright base)."""
        base_size = self._base_size()
        base = picture.resize(
            self._stored(base_size), Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP
        )
        if self.still:
            base = _without_opaque_alpha(base)  # cheap here, and it carries over to every size
        base = colour.to_srgb(base, self.source.profile)
        if not self.placed:
            self._place_crops(base)
        made: dict[int, Image.Image] = {}
        current = base
        for i in self.order:
            target = self.targets[i]
            if target.crop is None:
                if current.size != self._stored(target.size):
                    current = current.resize(self._stored(target.size), Image.Resampling.LANCZOS)
                out = current
            else:
                out = current.resize(
                    self._stored(target.size),
                    Image.Resampling.LANCZOS,
                    box=self._crop_in(current, target.crop),
                )
            made[i] = self._finish(out, target)
        return [made[i] for i in range(len(self.targets))], upright(base, self.source.orientation)

    def _base_size(self) -> Size:
        first = self.targets[self.order[0]]
        if first.crop is None:
            return first.size
        sw, sh = self.source.size
        return max(1, round(sw * first.scale)), max(1, round(sh * first.scale))

    def _stored(self, upright: Size) -> Size:
        return oriented(upright, self.source.orientation)

    def _crop_in(self, current: Image.Image, crop: Box) -> Box:
        """An upright source box -> the same region of `current` (stored orientation)."""
        x0, y0, x1, y1 = sizing.stored_box(crop, self.source.size, self.source.orientation)
        sw, sh = self._stored(self.source.size)
        fx, fy = current.width / sw, current.height / sh
        return x0 * fx, y0 * fy, x1 * fx, y1 * fy

    def _place_crops(self, base: Image.Image) -> None:
        """Move attention crops once, from the first picture (animation frames share them)."""
        self.placed = True
        if any(t.attention for t in self.targets):
            whole = upright(base, self.source.orientation)
            self.targets = [
                sizing.place_by_attention(t, whole, self.source.size) if t.attention else t
                for t in self.targets
            ]

    def _finish(self, im: Image.Image, target: Target) -> Image.Image:
        im = upright(im, self.source.orientation)
        if self.spec.sharpen and target.scale <= _SHARPEN_BELOW_SCALE:
            # Light: restores the crispness a large downscale averages away, no halos.
            im = im.filter(ImageFilter.UnsharpMask(radius=0.6, percent=60, threshold=2))
        return im


_SHARPEN_BELOW_SCALE = 1 / 3  # sharpen thumbnails at most a third of the source's size


# ---------------------------------------------------------------------------------------------
# Stills and animations


def _render_still(
    picture: Image.Image, source: _Source, targets: list[Target], spec: RenderSpec
) -> Rendered:
    images, base = _Pipeline(source, targets, spec, still=True).run(picture, source.box)
    options = _encoding(spec)
    thumbnails = []
    for target, im in zip(targets, images, strict=True):
        try:
            ext, data = encode.encode_still(im, options, source.metadata)
        except encode.TooLarge as e:
            raise Refused(FailKind.TOO_LARGE, str(e)) from e
        thumbnails.append(Thumbnail(target.width, im.size, ext, data, label=target.label))
    return source.size, tuple(thumbnails), _index(spec, source, thumbnails, base), source.facts


def _render_animation(
    animation: Animation, source: _Source, targets: list[Target], spec: RenderSpec
) -> Rendered:
    """Every frame through the same pipeline (frames are resized as they are decoded, so memory
    holds one full frame at a time), then an animated GIF or WebP per target."""
    pipeline = _Pipeline(source, targets, spec, still=False)
    frames: list[list[Image.Image]] = [[] for _ in targets]
    durations: list[int] = []
    first = None
    for picture, duration in animation.frames:
        durations.append(duration)
        images, base = pipeline.run(picture, None)
        first = first or base
        for made, image in zip(frames, images, strict=True):
            made.append(image)
    fmt = "GIF" if animation.gif and spec.format != "webp" else "WEBP"
    options = _encoding(spec)
    thumbnails = []
    for target, made in zip(targets, frames, strict=True):
        try:
            ext, data = encode.encode_animation(
                made, durations, animation.loop, fmt, options, source.metadata
            )
        except encode.TooLarge as e:
            raise Refused(FailKind.TOO_LARGE, str(e)) from e
        thumbnails.append(
            Thumbnail(target.width, made[0].size, ext, data, label=target.label, frames=len(made))
        )
    assert first is not None
    index = _index(spec, source, thumbnails, first)
    return source.size, tuple(thumbnails), index, source.facts


def _index(
    spec: RenderSpec, source: _Source, thumbnails: list[Thumbnail], picture: Image.Image
) -> bytes | None:
    if not spec.index:
        return None
    entries = [
        placeholder.Entry(
            file=thumbnail_name(source.name, t.name, t.ext),
            name=t.name,
            size=t.size,
            bytes=len(t.data),
            frames=t.frames,
        )
        for t in thumbnails
    ]
    return placeholder.index_json(source.name, source.size, entries, picture, source.facts)
