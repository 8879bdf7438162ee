"""A camera roll's other formats: HEIC, camera RAW and video, CPU per file and end to end.

`PYTHONPATH=. python -m bench.formats_bench [--photos N] [--repeat N]`, or the `formats` part of
`python -m bench`.

- HEIC: render() CPU ms per photo (3 widths) for each HEIC/HEIF of the corpus (the iPhone's has
  an embedded 240x320 thumbnail; the others have none), and end to end: N copies of the iPhone
  HEIC into a running daemon beside Debian's vipsthumbnail (which has libheif's HEVC decoder)
  on the same files, as many processes each.
- RAW: render() CPU ms for a DNG whose embedded JPEG preview is a full-size 9 MP photo (as most
  cameras embed), and for one with no preview (a half-size demosaic of its sensor data).
- Video: bench/video_bench.py's rows (a poster's CPU next to `ffmpeg -ss 1`).
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench import baselines, video_bench
from bench.corpus import ROOT
from bench.daemon_run import DaemonRun, drop, latencies
from thumbd.render.pipeline import render
from thumbd.render.spec import RenderSpec

HEIC_CORPUS = ROOT.parent / "shared" / "corpus" / "heic"
PHOTO_CORPUS = ROOT.parent / "shared" / "corpus" / "photos"
TARGETS = {"heic_thumbnail_ms": 15.0, "heic_vs_vips": 3.0, "raw_preview_ms": 30.0}


def cpu_ms(path: Path, repeat: int, spec: RenderSpec | None = None) -> float:
    spec = spec or RenderSpec()
    times = []
    for _ in range(repeat):
        started = time.process_time()
        result = render(str(path), spec)
        times.append((time.process_time() - started) * 1000)
        if result.error is not None:
            raise RuntimeError(f"{path}: {result.error}")
    return statistics.median(times)


def heic_rows(repeat: int) -> list[dict[str, Any]]:
    return [
        {"file": p.name, "cpu_ms": cpu_ms(p, repeat)}
        for p in sorted(HEIC_CORPUS.iterdir())
        if p.suffix.lower() in (".heic", ".heif")
    ]


def heic_end_to_end(work: Path, n: int, workers: int) -> dict[str, Any]:
    """N copies of the iPhone HEIC: a daemon's burst, and vipsthumbnail on the same files."""
    source = HEIC_CORPUS / "iphone_13_pro_max.HEIC"
    copies = work / "heic-copies"
    copies.mkdir(parents=True)
    files = [copies / f"h{i:05d}.HEIC" for i in range(n)]
    data = source.read_bytes()
    for i, f in enumerate(files):  # each its own bytes past the end: copies are not rendered
        f.write_bytes(data + b"\0" * (i + 1))
    run = DaemonRun(work / "heic-burst", workers)
    staged = work / "heic-staged"
    staged.mkdir()
    for f in files:
        (staged / f.name).hardlink_to(f)
    with run:
        run.start()
        run.wait_ready()
        dropped = drop(sorted(staged.iterdir()), run.incoming)
        run.wait_done(n, timeout=max(120.0, n))
        lat, first, last = latencies(run, dropped)
    row: dict[str, Any] = {"photos": n, "thumbd_per_s": len(lat) / (last - first)}
    if baselines.vips_version() is not None:
        vips = baselines.vipsthumbnail(files, work / "heic-vips", (200, 64, 32), 85, workers)
        row["vips_per_s"] = vips["photos_per_s"]
    return row


def make_dng(path: Path, preview: bytes | None) -> Path:
    """A DNG (tests/render/test_raw.py writes them byte by byte) with `preview` or none."""
    from tests.render.test_raw import make_dng as write_dng

    return write_dng(path, preview=preview, thumbnail=preview is not None)


def raw_rows(work: Path, repeat: int) -> list[dict[str, Any]]:
    with Image.open(PHOTO_CORPUS / "HMD_Nokia_8.3_5G.jpg") as im:
        buffer = io.BytesIO()
        im.convert("RGB").save(buffer, "JPEG", quality=92)
        size = im.size
    with_preview = make_dng(work / "preview.dng", buffer.getvalue())
    sensor_only = make_dng(work / "sensor.dng", None)
    return [
        {"file": f"DNG, {size[0]}x{size[1]} JPEG preview", "cpu_ms": cpu_ms(with_preview, repeat)},
        {"file": "DNG, no preview (demosaic)", "cpu_ms": cpu_ms(sensor_only, repeat)},
    ]


def run(work: Path, photos: int, workers: int, repeat: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"heic": heic_rows(repeat), "raw": raw_rows(work, repeat)}
    results["heic_end_to_end"] = heic_end_to_end(work, photos, workers)
    if shutil.which("ffmpeg") is not None:
        (work / "clips").mkdir()
        results["video"] = video_bench.run(work / "clips", repeat)
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["a camera roll's formats, ms CPU per file (render(), 3 widths, median)"]
    for r in results["heic"]:
        lines.append(f"  HEIC {r['file']:<32} {r['cpu_ms']:8.1f}")
    iphone = next((r for r in results["heic"] if r["file"].startswith("iphone")), None)
    if iphone is not None:
        ok = iphone["cpu_ms"] <= TARGETS["heic_thumbnail_ms"]
        lines.append(f"  iPhone HEIC (embedded thumbnail) {'ok' if ok else 'MISSED'} (<= 15 ms)")
    for r in results["raw"]:
        lines.append(f"  RAW  {r['file']:<32} {r['cpu_ms']:8.1f}")
    ok = results["raw"][0]["cpu_ms"] <= TARGETS["raw_preview_ms"]
    lines.append(f"  RAW with a large preview {'ok' if ok else 'MISSED'} (<= 30 ms)")
    e2e = results["heic_end_to_end"]
    line = f"  iPhone HEIC end to end: thumbd {e2e['thumbd_per_s']:.1f}/s"
    if "vips_per_s" in e2e:
        ratio = e2e["thumbd_per_s"] / e2e["vips_per_s"]
        ok = ratio >= TARGETS["heic_vs_vips"]
        line += (
            f", vipsthumbnail {e2e['vips_per_s']:.1f}/s: {ratio:.1f}x {'ok' if ok else 'MISSED'}"
        )
        line += " (>= 3x)"
    lines.append(line)
    if "video" in results:
        lines.append("video posters (bench/video_bench.py)")
        lines += ["  " + row for row in video_bench.table(results["video"]).splitlines()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.formats_bench", description=__doc__)
    p.add_argument("--photos", type=int, default=100, help="HEIC copies end to end (100)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="thumbd-formats-bench-") as tmp:
        print(table(run(Path(tmp), args.photos, args.workers, args.repeat)))


if __name__ == "__main__":
    main()
