"""Video posters: CPU milliseconds per poster, thumbd's decoder next to the ffmpeg program.

`PYTHONPATH=. python -m bench.video_bench [--repeat N] [--keep DIR]`

Two clips are made with ffmpeg at bench time, like a phone's (a key frame every 2 s, a little
grain so key frames weigh what a phone's do): 1080p H.264 at 17 Mbit/s (target <= 80 ms) and
4K HEVC at 45 Mbit/s (<= 250 ms), plus the 4K clip as HLG (10-bit BT.2020, as an iPhone
records) for the tone-mapping cost.

- thumbd: `poster()` (largest 200) then a Pillow LANCZOS resize to 200, 64 and 32 px, all in
  this process, measured with time.process_time (every thread of this process).
- ffmpeg: `ffmpeg -ss 1 -i X -frames:v 1` as other thumbnailers run it (its own threads), the
  frame as raw RGB on a pipe (no PNG encoding counted), then the same three resizes here. Its
  CPU is the child's user + system time.

Each runs `repeat` times per clip and the median counts.
"""

from __future__ import annotations

import argparse
import functools
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from thumbd.render.decoders.video import poster

WIDTHS = (200, 64, 32)


@dataclass(frozen=True)
class Clip:
    name: str
    size: tuple[int, int]
    seconds: int
    encoder: tuple[str, ...]
    target_ms: float


X264 = ("-c:v", "libx264", "-preset", "veryfast", "-b:v", "17M")
X265 = ("-c:v", "libx265", "-preset", "ultrafast", "-b:v", "45M")
HLG = (
    "-pix_fmt", "yuv420p10le",
    "-x265-params", "log-level=error:colorprim=bt2020:transfer=arib-std-b67:colormatrix=bt2020nc",
    "-color_primaries", "bt2020", "-color_trc", "arib-std-b67", "-colorspace", "bt2020nc",
)  # fmt: skip
CLIPS = (
    Clip("1080p H.264", (1920, 1080), 6, X264, 80),
    Clip("4K HEVC", (3840, 2160), 3, (*X265, "-x265-params", "log-level=error"), 250),
    Clip("4K HEVC HLG 10-bit", (3840, 2160), 3, (*X265, *HLG), 250),
)  # fmt: skip


def make(clip: Clip, folder: Path) -> Path:
    path = folder / (clip.name.replace(" ", "_").replace(".", "") + ".mp4")
    if path.exists():
        return path
    w, h = clip.size
    source = f"testsrc2=size={w}x{h}:rate=30:duration={clip.seconds},noise=alls=2:allf=t"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", source]
    subprocess.run([*cmd, *clip.encoder, "-g", "60", str(path)], check=True)
    return path


def resize_all(image: Image.Image) -> None:
    for width in WIDTHS:
        height = max(1, round(image.height * width / image.width))
        image.resize((width, height), Image.Resampling.LANCZOS)


def thumbd_ms(path: Path) -> tuple[float, int]:
    start = time.process_time()
    p = poster(str(path), largest=max(WIDTHS), max_pixels=100_000_000)
    resize_all(p.image)
    return (time.process_time() - start) * 1000, p.decoded


def thumbd_cpu_ms(path: Path) -> float:
    return thumbd_ms(path)[0]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ffmpeg_ms(path: Path, size: tuple[int, int]) -> float:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-ss", "1", "-i", str(path), "-frames:v", "1"]
    before, own = _children_cpu(), time.process_time()
    raw = subprocess.run(
        [*cmd, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"], capture_output=True, check=True
    ).stdout
    resize_all(Image.frombytes("RGB", size, raw))
    return (_children_cpu() - before + time.process_time() - own) * 1000


def median(fn: Callable[[], float], repeat: int) -> float:
    fn()  # warm: the file in the page cache, the codecs loaded
    return statistics.median(fn() for _ in range(repeat))


def run(folder: Path, repeat: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for clip in CLIPS:
        path = make(clip, folder)
        decoded = thumbd_ms(path)[1]
        ours = median(functools.partial(thumbd_cpu_ms, path), repeat)
        theirs = median(functools.partial(ffmpeg_ms, path, clip.size), repeat)
        rows.append(
            {"clip": clip.name, "thumbd_ms": ours, "decoded": decoded, "ffmpeg_ms": theirs,
             "target_ms": clip.target_ms, "mb": path.stat().st_size / 1e6}
        )  # fmt: skip
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        f"{'clip':<20} {'MB':>5} {'thumbd ms':>10} {'frames':>6} {'ffmpeg -ss 1 ms':>16}"
        f" {'target':>7}  ok",
    ]
    for r in rows:
        ok = "yes" if float(r["thumbd_ms"]) <= float(r["target_ms"]) else "NO"  # type: ignore[arg-type]
        lines.append(
            f"{r['clip']!s:<20} {r['mb']:>5.1f} {r['thumbd_ms']:>10.1f} {r['decoded']!s:>6}"
            f" {r['ffmpeg_ms']:>16.1f} {r['target_ms']:>7.0f}  {ok}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.video_bench", description=__doc__)
    p.add_argument("--repeat", type=int, default=5, help="runs per clip and approach (5)")
    p.add_argument("--keep", type=Path, default=None, help="make (or reuse) the clips here")
    args = p.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        raise SystemExit("the ffmpeg program makes the clips: apt-get install ffmpeg")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        print(table(run(args.keep, args.repeat)))
        return
    with tempfile.TemporaryDirectory(prefix="thumbd-video-bench-") as folder:
        print(table(run(Path(folder), args.repeat)))


if __name__ == "__main__":
    main()
