"""Video poster frames with PyAV: FFmpeg in the worker process, never the ffmpeg program.

`poster()` reads only what one frame needs: it seeks to a few moments near the start (around
1 s, a quarter and half of the way in), decodes the key frame at or before each (the decoder
skips every other frame), and keeps the first that is not nearly uniform (a black or faded
intro): a two-hour film costs what a three-second clip does. The frame is scaled in swscale
straight from YUV to about twice the largest thumbnail, with the clip's own matrix (BT.601,
BT.709, BT.2020) and range (limited, full), turned upright by the stream's display matrix,
and HDR (HLG, as every recent iPhone records, or PQ) is tone-mapped to SDR sRGB.

Every way a file can be wrong becomes a `VideoRefused` carrying a `Failure`; nothing FFmpeg
logs reaches stderr (its messages are captured and the useful one goes into the reason).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Any, BinaryIO

import av
import av.logging
import numpy as np
from av.container import InputContainer
from av.stream import Disposition
from av.video.frame import VideoFrame
from av.video.reformatter import ColorPrimaries, ColorTrc
from av.video.stream import VideoStream
from PIL import Image

from thumbd.render import apple, formats
from thumbd.render.decoders import Decoded, largest_side
from thumbd.render.source import Refused
from thumbd.render.spec import FailKind, Failure, RenderSpec

# What PyAV's FFmpeg reads well, by extension: ISO/QuickTime (phones, cameras), Matroska and
# WebM, AVI, MPEG transport streams (AVCHD camcorders' .mts/.m2ts) and program streams (.mpg,
# DVD .vob), ASF (.wmv), Flash video and Ogg (Theora).
VIDEO_EXTENSIONS = formats.VIDEO_EXTENSIONS

# The demuxers FFmpeg may pick for a file, matched against any of a demuxer's names. Probing
# by content otherwise lets a playlist (hls, concat) open other files or URLs, and lets the
# image and exotic demuxers parse input no camera writes.
DEMUXERS = "mov,matroska,avi,mpegts,mpeg,asf,flv,ogg"

# The first box of an ISO base media (MP4, MOV, 3GP) file.
ISO_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
EBML = b"\x1a\x45\xdf\xa3"  # Matroska and WebM

KEY_PACKETS = 240  # packets read after a seek before that moment is given up on
FIRST_PACKETS = 120  # packets decoded from the start when no key frame could be found
SCALE_THREADS = 1  # swscale would start a thread per core: one worker, one core
SCORE_SIDE = 32  # a candidate is judged on a SCORE_SIDE x SCORE_SIDE grey thumbnail
MIN_DETAIL = 6.0  # grey-level standard deviation below which a frame is nearly uniform
DARK, BRIGHT = 20.0, 240.0  # mean grey levels outside which a frame is black or blown out

# AVColorSpace values (FFmpeg ABI) to the names swscale's matrices go by.
_MATRICES = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020"}
_MATRICES[10] = "BT2020"  # constant-luminance BT.2020 has no matrix of its own in swscale
_RANGE_MPEG, _RANGE_JPEG = 1, 2  # AVColorRange

_HLG, _PQ = int(ColorTrc.ARIB_STD_B67), int(ColorTrc.SMPTE2084)
SDR_WHITE_NITS = 203.0  # BT.2408: HDR reference white, where SDR white goes
HLG_PEAK_NITS = 1000.0  # the nominal HLG display the OOTF is defined for (gamma 1.2)
KNEE = 0.8  # tone curve: identity below, a soft shoulder towards 1.0 above
# BT.2087: linear BT.2020 RGB to linear BT.709 RGB.
BT2020_TO_BT709 = np.array(
    [[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Poster:
    """A poster frame, upright SDR sRGB, and what the clip is. `decoded` and `packets` count
    what it cost (frames out of the decoder, packets read): for tests and benchmarks."""

    image: Image.Image
    facts: dict[str, object]
    decoded: int = 0
    packets: int = 0


class VideoRefused(Exception):
    """A file that yields no poster; `.failure` says why in thumbd's terms."""

    def __init__(self, kind: FailKind, reason: str) -> None:
        super().__init__(reason)
        self.failure = Failure(kind, reason)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles across the process pool with both fields (args holds the reason only).
        return (type(self), (self.failure.kind, self.failure.reason))


@dataclass
class _Cost:
    decoded: int = 0
    packets: int = 0


def decode(f: IO[bytes], spec: RenderSpec) -> Decoded:
    """The decoder interface (render/decoders): the poster, upright SDR sRGB, and what the clip
    is, for the index."""
    try:
        found = poster(f, largest=largest_side(spec), max_pixels=spec.max_pixels)  # type: ignore[arg-type]
    except VideoRefused as e:
        raise Refused(e.failure.kind, e.failure.reason) from None
    return Decoded(found.image, facts=found.facts)


def poster(
    f: BinaryIO | str, *, largest: int, max_pixels: int, max_seconds: float | None = None
) -> Poster:
    """The poster frame of a video, scaled to about 2 x `largest` (never up).

    `max_pixels` bounds the frame size, checked before anything is decoded. `max_seconds`, if
    given, is a CPU budget for the search: once spent, the best frame seen so far is used.
    """
    with ExitStack() as stack:
        fh: BinaryIO = stack.enter_context(open(f, "rb")) if isinstance(f, str) else f
        if _size(fh) == 0:
            raise VideoRefused(FailKind.EMPTY, "empty file (0 bytes)")
        logs = stack.enter_context(_captured_logs())
        container = _open(fh, logs)
        stack.callback(container.close)
        stream = _video_stream(container)
        ctx = stream.codec_context
        _check_pixels(ctx.width, ctx.height, max_pixels)
        ctx.thread_count = 1  # the pool runs a worker per core: one worker, one core
        cost = _Cost()
        budget = None if max_seconds is None else time.process_time() + max_seconds
        frame = _choose(container, stream, cost, budget)
        _check_pixels(frame.width, frame.height, max_pixels)
        sar = _sample_aspect(stream)
        image = _upright(_to_rgb(frame, sar, 2 * largest), _rotation(frame, stream))
        return Poster(image, _facts(container, stream, frame, sar), cost.decoded, cost.packets)
    raise AssertionError("unreachable")  # mypy: ExitStack may swallow exceptions


def _size(fh: BinaryIO) -> int:
    here = fh.tell()
    end = fh.seek(0, os.SEEK_END)
    fh.seek(here)
    return end - here


@contextmanager
def _captured_logs() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's errors, kept from stderr (and from Python's last-resort log handler), from
    every thread: decoder threads log too."""
    previous, repeats = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # the second broken file of a worker is told why too
    try:
        with av.logging.Capture(local=False) as logs:
            yield logs
    finally:
        av.logging.set_level(previous)
        av.logging.set_skip_repeated(repeats)


def _open(fh: BinaryIO, logs: list[tuple[int, str, str]]) -> InputContainer:
    head = fh.read(12)
    fh.seek(-len(head), os.SEEK_CUR)
    options = {"format_whitelist": DEMUXERS}
    probe: dict[str, str] = {}
    if head[4:8] in ISO_BOXES or head.startswith(EBML):
        # Their headers say all the poster needs. Probing would decode frames on top (for
        # H.264, up to 7 to guess the reorder delay: most of a 1080p poster's cost); the
        # pixel format stays unknown until the poster frame decodes, which is all that needs it.
        probe = {"skip_frame": "all"}
        options |= {"probesize": "32", "analyzeduration": "0"}
    try:
        return av.open(
            fh, mode="r", options=probe, container_options=options, metadata_errors="ignore"
        )
    except av.error.FFmpegError as e:
        raise _refusal(e, logs, head) from None


def _refusal(
    e: av.error.FFmpegError, logs: list[tuple[int, str, str]], head: bytes
) -> VideoRefused:
    said = "; ".join(dict.fromkeys(message.strip() for _, _, message in logs[-3:]))
    if "moov atom not found" in said and head[4:8] in ISO_BOXES:
        # An MP4 or MOV whose index never arrived: the writer was stopped, or still writes.
        return VideoRefused(
            FailKind.TRUNCATED, "truncated video: no moov atom (the index of its frames)"
        )
    if "whitelist" in said:
        return VideoRefused(
            FailKind.UNSUPPORTED,
            "not a video container thumbd reads (MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, "
            "ASF, FLV, Ogg): FFmpeg takes it for another format",
        )
    if isinstance(e, av.error.InvalidDataError):
        return VideoRefused(FailKind.UNDECODABLE, "not a video FFmpeg can read: invalid data")
    return VideoRefused(FailKind.UNDECODABLE, f"video could not be opened: {e.strerror}")


def _video_stream(container: InputContainer) -> VideoStream:
    streams = container.streams
    moving = [s for s in streams.video if not s.disposition & Disposition.attached_pic]
    if not moving:
        if streams.video:
            what = "only a cover picture"
        elif streams.audio:
            what = "audio only"
        else:
            what = ", ".join(sorted({s.type for s in streams})) or "no streams at all"
        raise VideoRefused(FailKind.UNSUPPORTED, f"no video stream ({what})")
    default = [s for s in moving if s.disposition & Disposition.default]
    stream = (default or moving)[0]
    if stream.codec_context is None:
        raise VideoRefused(
            FailKind.UNSUPPORTED, f"no decoder for the video codec {stream.codec.name!r}"
        )
    return stream


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise VideoRefused(
            FailKind.TOO_LARGE,
            f"frame {width}x{height} exceeds max_pixels ({width * height:,} > {max_pixels:,})",
        )


def _duration(container: InputContainer, stream: VideoStream) -> float | None:
    if stream.duration and stream.time_base and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def _moments(duration: float | None) -> tuple[float, ...]:
    """Where to look, in seconds from the start: around 1 s (10% of a short clip), then a
    quarter and half of the way in, past a long intro. Unknown length: 1, 5 and 15 s (a seek
    past the end finds nothing and the search goes on)."""
    if duration is None:
        return (1.0, 5.0, 15.0)
    first = min(1.0, 0.1 * duration)
    return tuple(sorted({round(t, 3) for t in (first, 0.25 * duration, 0.5 * duration)}))


def _choose(
    container: InputContainer, stream: VideoStream, cost: _Cost, budget: float | None
) -> VideoFrame:
    """The first candidate key frame with detail, else the one with the most, else the
    first frame that decodes at all."""
    best: VideoFrame | None = None
    best_detail = -1.0
    seen: set[int | None] = set()
    for moment in _moments(_duration(container, stream)):
        if best is not None and budget is not None and time.process_time() > budget:
            break
        frame = _key_frame_at(container, stream, moment, cost)
        if frame is None or frame.pts in seen:
            continue
        seen.add(frame.pts)
        detail, usable = _detail(frame)
        if usable:
            return frame
        if detail > best_detail:
            best, best_detail = frame, detail
    if best is None:
        best = _first_frame(container, stream, cost)
    if best is None:
        codec = stream.codec_context.name
        raise VideoRefused(FailKind.UNDECODABLE, f"no frame of the {codec} video decodes")
    return best


def _key_frame_at(
    container: InputContainer, stream: VideoStream, moment: float, cost: _Cost
) -> VideoFrame | None:
    """The key frame at or before `moment` seconds, with the decoder skipping all others."""
    assert stream.time_base is not None
    target = (stream.start_time or 0) + int(moment / stream.time_base)
    try:
        container.seek(target, backward=True, any_frame=False, stream=stream)
    except av.error.FFmpegError:
        return None  # not seekable: the search falls back to the first frame
    stream.codec_context.skip_frame = "NONKEY"
    return _decode_one(container, stream, cost, KEY_PACKETS, drain_after_key=True)


def _first_frame(container: InputContainer, stream: VideoStream, cost: _Cost) -> VideoFrame | None:
    """The first frame of any type: for streams with no key frames FFmpeg recognises
    (intra refresh) or that cannot seek."""
    # Unseekable: unread so far, too, and so the demuxer is still at the start.
    with suppress(av.error.FFmpegError):
        container.seek(0, backward=True, any_frame=False, stream=stream)
    stream.codec_context.skip_frame = "DEFAULT"
    return _decode_one(container, stream, cost, FIRST_PACKETS, drain_after_key=False)


def _decode_one(
    container: InputContainer,
    stream: VideoStream,
    cost: _Cost,
    limit: int,
    *,
    drain_after_key: bool,
) -> VideoFrame | None:
    ctx = stream.codec_context
    try:
        for count, packet in enumerate(container.demux(stream), 1):
            cost.packets += 1
            frames = _decode(ctx, packet)
            # A key frame can wait in the decoder behind its reorder delay, for packets the
            # decoder would skip anyway: drain it now (the next seek resets the decoder).
            if not frames and (count >= limit or (drain_after_key and packet.is_keyframe)):
                frames = _decode(ctx, None)
            if frames:
                cost.decoded += len(frames)
                return frames[0]
            if count >= limit:
                return None
    except av.error.FFmpegError:
        return None  # a read error in the container: this moment is lost, not the clip
    return None


def _decode(ctx: Any, packet: av.Packet[Any] | None) -> list[VideoFrame]:
    try:
        return list(ctx.decode(packet))
    except (av.error.InvalidDataError, av.error.EOFError):
        return []  # a corrupt packet, or a drained decoder: not a frame


def _detail(frame: VideoFrame) -> tuple[float, bool]:
    """How much there is to see (grey-level standard deviation) and whether it is enough."""
    side = min(SCORE_SIDE, max(frame.width, frame.height))
    grey = frame.reformat(
        width=side, height=side, format="gray", interpolation="AREA", threads=SCALE_THREADS
    )
    levels = grey.to_ndarray().astype(np.float32)
    mean, spread = float(levels.mean()), float(levels.std())
    return spread, spread >= MIN_DETAIL and DARK <= mean <= BRIGHT


def _sample_aspect(stream: VideoStream) -> Fraction:
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return Fraction(sar) if sar and sar > 0 else Fraction(1)


def _fit(width: float, height: float, box: int) -> tuple[int, int]:
    scale = min(1.0, box / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(frame: VideoFrame, sar: Fraction, box: int) -> Image.Image:
    """Scale and convert in one swscale pass (cheap: YUV at the small size), then tone-map
    HDR and map BT.2020 primaries in numpy."""
    width, height = _fit(frame.width * float(sar), frame.height, box)
    transfer, wide = int(frame.color_trc), int(frame.color_primaries) == ColorPrimaries.BT2020
    hdr = transfer in (_HLG, _PQ)
    pixels = "rgb48le" if hdr or wide else "rgb24"
    if frame.format.is_rgb:
        rgb = frame.reformat(
            width=width, height=height, format=pixels, interpolation="AREA", threads=SCALE_THREADS
        )
    else:
        matrix = _MATRICES.get(int(frame.colorspace))
        if matrix is None:  # untagged: HD is BT.709, SD BT.601 (what players assume)
            matrix = "ITU709" if frame.height >= 720 else "ITU601"
        rgb = frame.reformat(
            width=width,
            height=height,
            format=pixels,
            src_colorspace=matrix,
            dst_colorspace=matrix,
            src_color_range=_range(frame),
            dst_color_range=_RANGE_JPEG,
            interpolation="AREA",
            threads=SCALE_THREADS,
        )
    if pixels == "rgb24":
        return Image.fromarray(rgb.to_ndarray(), "RGB")
    return Image.fromarray(_wide_to_srgb(rgb.to_ndarray(), transfer, wide), "RGB")


def _range(frame: VideoFrame) -> int:
    if int(frame.color_range) in (_RANGE_MPEG, _RANGE_JPEG):
        return int(frame.color_range)
    # Untagged: JPEG-style formats are full range, everything else limited.
    return _RANGE_JPEG if frame.format.name.startswith("yuvj") else _RANGE_MPEG


def _wide_to_srgb(rgb16: np.ndarray[Any, Any], transfer: int, wide: bool) -> np.ndarray[Any, Any]:
    """16-bit non-linear RGB (BT.2020 if `wide`) to 8-bit sRGB: linearise, map primaries,
    tone-map HDR (reference white to SDR white, highlights onto a shoulder), encode."""
    signal = rgb16.astype(np.float32) / 65535.0
    if transfer == _HLG:
        light = _hlg_display(signal)
    elif transfer == _PQ:
        light = _pq_display(signal)
    else:
        light = _bt709_linear(signal)
    if wide:
        light = light @ BT2020_TO_BT709.T
    light = np.maximum(light, 0.0)  # out of BT.709's gamut: clipped to its edge
    if transfer in (_HLG, _PQ):
        light = _tone_map(light)
    return _srgb_encode(np.clip(light, 0.0, 1.0))


def _hlg_display(signal: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """BT.2100 HLG: inverse OETF to scene light, OOTF (gamma 1.2 at 1000 nits) to display
    light, in units of SDR white (BT.2408: 203 nits, HLG signal 0.75)."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    low = signal * signal / 3.0
    high = (np.exp((np.maximum(signal, 0.5) - c) / a) + b) / 12.0
    scene = np.where(signal <= 0.5, low, high)
    luma = scene @ np.array([0.2627, 0.6780, 0.0593], dtype=np.float32)
    display: np.ndarray[Any, Any] = scene * np.power(np.maximum(luma, 0.0), 0.2)[..., None]
    return display * (HLG_PEAK_NITS / SDR_WHITE_NITS)


def _pq_display(signal: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """SMPTE ST 2084 EOTF to nits, in units of SDR white."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    p = np.power(np.clip(signal, 0.0, 1.0), 1 / m2)
    nits: np.ndarray[Any, Any] = 10000.0 * np.power(np.maximum(p - c1, 0.0) / (c2 - c3 * p), 1 / m1)
    return nits / SDR_WHITE_NITS


def _bt709_linear(signal: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Inverse BT.709 OETF (BT.2020 SDR uses the same curve)."""
    return np.where(
        signal < 0.081, signal / 4.5, np.power((signal + 0.099) / 1.099, 1 / 0.45)
    ).astype(np.float32)


def _tone_map(light: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Identity up to KNEE, then an exponential shoulder that reaches 1.0 only at infinity,
    applied to each pixel's brightest channel so hues keep their ratios."""
    peak = light.max(axis=-1, keepdims=True)
    over = np.maximum(peak - KNEE, 0.0)
    mapped = np.where(peak <= KNEE, peak, KNEE + (1 - KNEE) * (1 - np.exp(-over / (1 - KNEE))))
    scale = np.divide(mapped, peak, out=np.ones_like(peak), where=peak > 0)
    mapped_light: np.ndarray[Any, Any] = light * scale
    return mapped_light


def _srgb_encode(light: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    encoded = np.where(light <= 0.0031308, 12.92 * light, 1.055 * np.power(light, 1 / 2.4) - 0.055)
    return np.round(encoded * 255.0).astype(np.uint8)


def _rotation(frame: VideoFrame, stream: VideoStream) -> int:
    """Degrees counter-clockwise that make the frame upright: the display matrix FFmpeg puts
    on frames, else an old-style `rotate` tag (which counts clockwise)."""
    degrees = float(frame.rotation or 0)
    if not degrees:
        try:
            degrees = -float(stream.metadata.get("rotate", 0))
        except ValueError:
            degrees = 0.0
    return round(degrees / 90) * 90 % 360


def _upright(image: Image.Image, rotation: int) -> Image.Image:
    turns = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }
    return image.transpose(turns[rotation]) if rotation in turns else image


def _facts(
    container: InputContainer, stream: VideoStream, frame: VideoFrame, sar: Fraction
) -> dict[str, object]:
    width, height = round(frame.width * sar), frame.height
    if _rotation(frame, stream) in (90, 270):
        width, height = height, width
    start = stream.start_time or 0
    assert stream.time_base is not None
    at = float((frame.pts - start) * stream.time_base) if frame.pts is not None else 0.0
    content_id = apple.from_metadata(container.metadata)  # a Live Photo's motion (intake/live)
    return {
        "kind": "video",
        "duration": _duration(container, stream),
        "frame_size": [width, height],
        "poster_time": round(max(at, 0.0), 3),
        "codec": stream.codec_context.name,
        **({} if content_id is None else {"content_id": content_id}),
    }
