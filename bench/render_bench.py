"""Part 1: render() alone, against the decode floor and the seed's way, with a quality check.

All three are measured in this process, one photo at a time, as CPU time (time.process_time),
so other load on the machine inflates them far less than wall-clock time. Each approach runs
`repeat` times per photo and the median counts.

- floor: open the JPEG, ask draft() for the smallest DCT scale that still gives at least twice
  the largest width (upright, as the widths need it: a 3264x2448 photo needs 1/8 for 200 px),
  and decode. Nothing else: no resize, no encode. No thumbnailer can decode less.
- seed: what thumbd did first: full decode, orient, one LANCZOS resize per width from the full
  image, encode each (JPEG, the same quality and optimize setting as thumbd).
- render: thumbd.render.render() exactly as the workers run it.

PSNR compares each thumbnail render() made (decoded from its JPEG bytes) with the seed's: full
decode, orient, one LANCZOS resize to the same size, the same JPEG encoder. It must stay >= 35
dB. `max_loss_vs_seed_db` is how much further from the ideal (unencoded) pixels thumbd's are
than the seed's: what the draft and the cascade cost next to the JPEG encoding itself.
"""

from __future__ import annotations

import functools
import io
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageOps, ImageStat

from bench.corpus import Photo
from thumbd.render import pipeline as render_module
from thumbd.render.pipeline import render
from thumbd.render.spec import RenderSpec

SWAPS_AXES = frozenset({5, 6, 7, 8})


def floor_scale(photo: Photo, largest: int, margin: float = 2.0) -> int:
    """The smallest JPEG DCT scale (1, 2, 4 or 8) giving >= `margin` times the largest width,
    upright. The floor is defined at twice; render() uses its own margin (render_scale)."""
    w, h = photo.size
    upright_w = h if photo.orientation in SWAPS_AXES else w
    need = margin * min(largest, upright_w)
    for scale in (8, 4, 2):
        if -(-upright_w // scale) >= need:
            return scale
    return 1


def render_scale(photo: Photo, largest: int) -> int:
    """The DCT scale render() decodes this photo at (thumbd.render's draft margin)."""
    return floor_scale(photo, largest, render_module._DRAFT_MARGIN)


def decode_floor(photo: Photo, largest: int) -> tuple[int, int]:
    scale = floor_scale(photo, largest)
    with Image.open(photo.path) as im:
        w, h = im.size
        im.draft(None, (-(-w // scale), -(-h // scale)))
        im.load()
        return im.size


def seed_way(photo: Photo, spec: RenderSpec) -> None:
    with Image.open(photo.path) as im:
        full = ImageOps.exif_transpose(im.convert("RGB"))
    for width in spec.widths:
        size = (width, max(1, round(full.size[1] * width / full.size[0])))
        thumb = full.resize(size, Image.Resampling.LANCZOS)
        thumb.save(io.BytesIO(), "JPEG", quality=spec.quality, optimize=True)


def cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm: the file in the page cache, Pillow's plugins imported
    times = []
    for _ in range(repeat):
        started = time.process_time()
        fn()
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(ImageStat.Stat(diff).sum2) / (3 * a.size[0] * a.size[1])
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def quality(photo: Photo, spec: RenderSpec) -> dict[str, dict[str, float]]:
    """Per width, in dB: render()'s thumbnail against the seed's (full decode, LANCZOS, the
    same JPEG encoder); both against the ideal pixels (full decode + LANCZOS, not encoded).
    JPEG at quality 85 alone costs a detailed 200 px photo 29-35 dB against its ideal pixels,
    so what draft and cascade cost shows as `vs_ideal` falling below `seed_vs_ideal`."""
    result = render(str(photo.path), spec)
    if result.error is not None:
        raise RuntimeError(f"{photo.path}: {result.error}")
    with Image.open(photo.path) as im:
        full = ImageOps.exif_transpose(im.convert("RGB"))
    out = {}
    for thumb in result.thumbnails:
        got = Image.open(io.BytesIO(thumb.data))
        ideal = full.resize(thumb.size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        ideal.save(buf, "JPEG", quality=spec.quality, optimize=True)
        seed = Image.open(buf)
        out[str(thumb.width)] = {
            "vs_seed": round(psnr(got, seed), 2),
            "vs_ideal": round(psnr(got, ideal), 2),
            "seed_vs_ideal": round(psnr(seed, ideal), 2),
        }
    return out


def measure(photos: list[Photo], spec: RenderSpec, repeat: int) -> dict[str, Any]:
    largest = max(spec.widths)
    rows = []
    for photo in photos:
        path = str(photo.path)
        floor = cpu_ms(functools.partial(decode_floor, photo, largest), repeat)
        rendered = cpu_ms(functools.partial(render, path, spec), repeat)
        seed = cpu_ms(functools.partial(seed_way, photo, spec), max(1, repeat // 4))
        rows.append(
            {
                "photo": photo.name,
                "size": list(photo.size),
                "megapixels": round(photo.megapixels, 1),
                "bytes": photo.bytes,
                "orientation": photo.orientation,
                "floor_scale": f"1/{floor_scale(photo, largest)}",
                "render_scale": f"1/{render_scale(photo, largest)}",
                "floor_ms": floor,
                "render_ms": rendered,
                "seed_ms": seed,
                "render_vs_floor": rendered / floor,
                "seed_vs_render": seed / rendered,
                "psnr_db": quality(photo, spec),
            }
        )
    return {"photos": rows, "summary": summarize(rows)}


def summarize(rows: list[dict[str, Any]], only: set[str] | None = None) -> dict[str, Any]:
    chosen = [r for r in rows if only is None or r["photo"] in only]
    if not chosen:
        return {}
    floor = statistics.fmean(r["floor_ms"] for r in chosen)
    rendered = statistics.fmean(r["render_ms"] for r in chosen)
    seed = statistics.fmean(r["seed_ms"] for r in chosen)
    widths = chosen[0]["psnr_db"].keys()
    return {
        "photos": len(chosen),
        "floor_ms": floor,
        "render_ms": rendered,
        "seed_ms": seed,
        "render_vs_floor": rendered / floor,
        "worst_render_vs_floor": max(r["render_vs_floor"] for r in chosen),
        "seed_vs_render": seed / rendered,
        "min_psnr_vs_seed_db": {w: min(r["psnr_db"][w]["vs_seed"] for r in chosen) for w in widths},
        "max_loss_vs_seed_db": {
            w: max(r["psnr_db"][w]["seed_vs_ideal"] - r["psnr_db"][w]["vs_ideal"] for r in chosen)
            for w in widths
        },
    }


# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a big bench process would
# report the bench's own peak.
RSS_PROBE = """
import sys
from thumbd.render import pipeline as render_module
from thumbd.render.pipeline import render
from thumbd.render.spec import RenderSpec
def peak_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
before = peak_kb()
result = render(sys.argv[1], RenderSpec())
assert result.error is None, result.error
print(before, peak_kb())
"""


def render_rss_mb(photo: Photo) -> tuple[float, float]:
    """Peak RSS (MB) of a fresh process before and after rendering the photo once: what one
    worker needs for a photo of this size."""
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(photo.path)],
        capture_output=True,
        text=True,
        check=True,
    )
    before, after = (int(v) / 1024 for v in out.stdout.split())
    return before, after


def scale_photos(
    source: Photo, folder: Path, megapixels: tuple[float, ...], upright: tuple[float, ...] = ()
) -> list[Photo]:
    """JPEGs of about `megapixels` MP tiled from one real photo (same detail per pixel as a
    real photo, unlike an upscale, which decodes faster than any camera file would); then one
    per `upright` size stored on its side with EXIF orientation 6, as a phone stores a photo
    taken upright (4000x3000 pixels shown 3000 wide)."""
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(source.path) as im:
        picture = ImageOps.exif_transpose(im.convert("RGB"))
    made = []
    for mp, orientation in [(mp, 1) for mp in megapixels] + [(mp, 6) for mp in upright]:
        w = round(math.sqrt(mp * 1e6 * 4 / 3))
        h = round(w * 3 / 4)
        if mp <= picture.size[0] * picture.size[1] / 1e6:
            canvas = picture.resize((w, h), Image.Resampling.LANCZOS)
        else:
            canvas = Image.new("RGB", (w, h))
            for y in range(0, h, picture.size[1]):
                for x in range(0, w, picture.size[0]):
                    canvas.paste(picture, (x, y))
        path = folder / f"scale-{mp:g}mp-o{orientation}.jpg"
        exif = Image.Exif()
        if orientation != 1:
            exif[0x0112] = orientation
        canvas.save(path, "JPEG", quality=92, exif=exif)
        made.append(Photo(path, canvas.size, orientation, path.stat().st_size))
    return made
