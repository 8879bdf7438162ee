"""Test clips made with the ffmpeg program (Debian's, installed by `make system-deps`).

Small and fast: 320x240, a few seconds, a few frames a second. thumbd itself never runs
ffmpeg; only these makers do, to have real files from a real encoder and muxer.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="the ffmpeg program makes the test clips (apt-get install ffmpeg)"
)

SIZE = (320, 240)
FPS = 5

# Extension: the encoder and muxer a real file of that kind would come from (MPEG-1/2 take
# only the standard frame rates).
CONTAINERS: dict[str, tuple[str, ...]] = {
    ".mp4": ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
    ".m4v": ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "ipod"),
    ".mov": ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
    ".3gp": ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
    ".3g2": ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
    ".mkv": ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
    ".webm": ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"),
    ".avi": ("-c:v", "mpeg4", "-q:v", "3"),
    ".mts": ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts"),
    ".m2ts": ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts"),
    ".ts": ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts"),
    ".mpg": ("-c:v", "mpeg2video", "-q:v", "3", "-r", "25", "-f", "vob"),
    ".mpeg": ("-c:v", "mpeg1video", "-q:v", "3", "-r", "25", "-f", "mpeg"),
    ".vob": ("-c:v", "mpeg2video", "-q:v", "3", "-r", "25", "-f", "vob"),
    ".wmv": ("-c:v", "wmv2", "-q:v", "3", "-f", "asf"),
    ".asf": ("-c:v", "wmv2", "-q:v", "3", "-f", "asf"),
    ".flv": ("-c:v", "flv", "-q:v", "3"),
    ".ogv": ("-c:v", "libtheora", "-q:v", "7"),
}


def ffmpeg(*args: str | Path) -> None:
    """Run ffmpeg quietly; a failure shows what it said."""
    if FFMPEG is None:
        pytest.skip(reason="the ffmpeg program makes the test clips (apt-get install ffmpeg)")
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"ffmpeg {' '.join(map(str, args))} failed: {done.stderr}")


def testsrc(
    seconds: float = 3, size: tuple[int, int] = SIZE, fps: int = FPS, black_until: float = 0
) -> tuple[str, ...]:
    """ffmpeg's moving test pattern as input arguments, black for the first `black_until` s."""
    graph = f"testsrc2=size={size[0]}x{size[1]}:rate={fps}:duration={seconds}"
    if black_until:
        graph += f",drawbox=color=black:t=fill:enable='lt(t,{black_until})'"
    return ("-f", "lavfi", "-i", graph)


def clip(
    path: Path,
    *,
    seconds: float = 3,
    size: tuple[int, int] = SIZE,
    fps: int = FPS,
    black_until: float = 0,
    keyint: int = FPS,
    content_id: str | None = None,
) -> Path:
    """A test-pattern clip in the container and codec its extension implies, with a key
    frame every `keyint` frames; `content_id` as an iPhone writes it into a Live Photo's MOV."""
    codec = CONTAINERS[path.suffix.lower()]
    gop = ("-g", str(keyint))
    tags: tuple[str, ...] = ()
    if content_id is not None:
        key = "com.apple.quicktime.content.identifier"
        tags = ("-metadata", f"{key}={content_id}", "-movflags", "use_metadata_tags")
    ffmpeg(*testsrc(seconds, size, fps, black_until), *codec, *gop, *tags, path)
    return path


def rotated(path: Path, source: Path, degrees: int = 90) -> Path:
    """`source` remuxed with a display rotation, as a phone records portrait video. ffmpeg 6
    and later take -display_rotation (counter-clockwise degrees); ffmpeg 5 the old clockwise
    `rotate` tag."""
    try:
        ffmpeg("-display_rotation:v:0", str(degrees), "-i", source, "-c", "copy", path)
    except AssertionError:
        ffmpeg("-i", source, "-c", "copy", "-metadata:s:v:0", f"rotate={-degrees % 360}", path)
    return path


def from_image(path: Path, image: Path, *args: str, seconds: float = 1) -> Path:
    """A clip of a still image (1 s, 5 fps), encoded with `args`."""
    ffmpeg("-loop", "1", "-framerate", str(FPS), "-t", str(seconds), "-i", image, *args, path)
    return path


def colour_clip(
    path: Path, image: Path, matrix: str, *, full_range: bool = False, tagged: bool = True
) -> Path:
    """Lossless H.264 of `image` converted to YUV with the `matrix` ("bt709" or "bt601"),
    tagged so (or, `tagged` false, with no colour tags at all, as old cameras write)."""
    tag = {"bt709": "bt709", "bt601": "smpte170m"}[matrix]
    rng = "pc" if full_range else "tv"
    vf = f"scale=out_color_matrix={matrix}:out_range={rng},format=yuv444p"
    tags = ("-colorspace", tag, "-color_primaries", tag, "-color_trc", tag, "-color_range", rng)
    return from_image(path, image, "-vf", vf, "-c:v", "libx264", "-qp", "0", *tags[: 8 * tagged])


def pq_clip(path: Path, image: Path) -> Path:
    """10-bit HEVC of an SDR `image` converted to PQ (HDR10) by zimg, SDR white at 203 nits
    (BT.2408)."""
    vf = (
        "format=gbrpf32le,zscale=tin=iec61966-2-1:pin=bt709:min=gbr:rin=full"
        ":t=smpte2084:p=bt2020:m=2020_ncl:r=limited:npl=203,format=yuv420p10le"
    )
    return _hevc_hdr(path, image, vf, "smpte2084")


def hlg_clip(path: Path, image: Path, tmp: Path) -> Path:
    """10-bit HEVC of an SDR `image` converted to HLG as BT.2100 and BT.2408 say: SDR white
    at 203 nits, the inverse OOTF on luminance. (zimg applies the OOTF to each channel, which
    desaturates colours; an iPhone does not.) Only the matrix and the 10 bits are ffmpeg's."""
    with Image.open(image) as im:
        srgb = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    to_2020 = np.array(
        [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
    )
    display = (linear @ to_2020.T) * (203 / 1000)  # relative to the 1000-nit HLG display
    luminance = display @ np.array([0.2627, 0.6780, 0.0593])
    scene = display * np.power(np.maximum(luminance, 1e-12), 1 / 1.2 - 1)[..., None]
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    high = a * np.log(np.maximum(12 * scene - b, 1e-12)) + c
    signal = np.where(scene <= 1 / 12, np.sqrt(3 * scene), high)
    raw = tmp / "hlg.rgb48"
    raw.write_bytes(np.round(np.clip(signal, 0, 1) * 65535).astype("<u2").tobytes())
    vf = (
        "zscale=min=gbr:rin=full:tin=arib-std-b67:pin=bt2020"
        ":m=2020_ncl:r=limited:t=arib-std-b67:p=bt2020,format=yuv420p10le"
    )
    size = f"{srgb.shape[1]}x{srgb.shape[0]}"
    rgb48 = ("-f", "rawvideo", "-pix_fmt", "rgb48le", "-s", size, "-framerate", str(FPS))
    return _hevc_hdr(path, raw, vf, "arib-std-b67", rgb48)


def _hevc_hdr(
    path: Path, source: Path, vf: str, transfer: str, source_args: tuple[str, ...] = ()
) -> Path:
    """Encoded and tagged as an iPhone tags its clips: BT.2020, 10-bit, HEVC."""
    tags = ("-colorspace", "bt2020nc", "-color_primaries", "bt2020", "-color_trc", transfer)
    x265 = f"log-level=error:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc"
    loop = () if source_args else ("-loop", "1", "-framerate", str(FPS))
    ffmpeg(*loop, *source_args, "-t", "1", "-i", source, "-vf", vf, "-c:v", "libx265",
           "-crf", "12", "-x265-params", x265, *tags, path)  # fmt: skip
    return path


def sdr_clip(path: Path, image: Path) -> Path:
    """The SDR rendering of the same `image`: 8-bit BT.709 H.264."""
    vf = "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p"
    tags = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709")
    return from_image(path, image, "-vf", vf, "-c:v", "libx264", "-crf", "12", *tags)


def audio_only(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", path)
    return path


def decoded_by_ffmpeg(clip: Path, out: Path, at: float = 0) -> Image.Image:
    """The frame the ffmpeg program shows at `at` s (it applies the display rotation)."""
    ffmpeg("-ss", str(at), "-i", clip, "-frames:v", "1", out)
    with Image.open(out) as im:
        return im.convert("RGB")
