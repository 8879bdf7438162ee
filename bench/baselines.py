"""Part 3: the same photos through libvips' vipsthumbnail and ImageMagick's convert.

Both run as many processes at once as thumbd has workers, each single-threaded
(VIPS_CONCURRENCY=1, MAGICK_THREAD_LIMIT=1) like a thumbd worker, writing the same widths at the
same JPEG quality, oriented upright and stripped of metadata. vipsthumbnail makes one size per
run, so it runs once per width over each process's share of the photos (every run decodes again,
with shrink-on-load); convert runs once per photo and width (`-thumbnail`, no size hint).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.procmon import machine_busy_seconds

MAGICK = Path("/usr/bin/convert")  # Debian's ImageMagick; /usr/local/bin may hold something else
HOW_TO_INSTALL = "apt-get install libvips-tools imagemagick (or run `make bench` as root)"


def vips_version() -> str | None:
    if shutil.which("vipsthumbnail") is None:
        return None
    out = subprocess.run(["vipsthumbnail", "--vips-version"], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip() or "unknown"


def magick_version() -> str | None:
    if not MAGICK.exists():
        return None
    out = subprocess.run([str(MAGICK), "-version"], capture_output=True, text=True)
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.removeprefix("Version: ") if "ImageMagick" in first else None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(
    jobs: list[list[str]], processes: int, env: dict[str, str]
) -> tuple[float, float, float]:
    """Run every command, `processes` at a time: (wall seconds, CPU seconds of all of them,
    cores kept busy by other work meanwhile)."""
    full_env = {**os.environ, **env}

    def run(cmd: list[str]) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr.strip()}")

    cpu0 = _children_cpu()
    busy0 = machine_busy_seconds()
    started = time.monotonic()
    with ThreadPoolExecutor(processes) as pool:
        list(pool.map(run, jobs))
    wall = time.monotonic() - started
    cpu = _children_cpu() - cpu0
    return wall, cpu, max(0.0, (machine_busy_seconds() - busy0 - cpu) / wall)


def vipsthumbnail(
    files: list[Path], out: Path, widths: tuple[int, ...], quality: int, processes: int
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    shares = [files[i::processes] for i in range(processes)]
    # One job per process: its share of the photos, one run per width after the other.
    jobs = []
    for share in shares:
        script = " && ".join(
            "vipsthumbnail --size {w}x -o '{o}/%s_{w}.jpg[Q={q},optimize_coding,strip]' {f}".format(
                w=w, o=out, q=quality, f=" ".join(f"'{p}'" for p in share)
            )
            for w in widths
        )
        jobs.append(["sh", "-c", script])
    timed = _timed(jobs, processes, {"VIPS_CONCURRENCY": "1"})
    return _result("vipsthumbnail", files, out, widths, timed, processes)


def magick(
    files: list[Path], out: Path, widths: tuple[int, ...], quality: int, processes: int
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        [
            str(MAGICK),
            str(f),
            "-auto-orient",
            "-thumbnail",
            f"{w}x",
            "-quality",
            str(quality),
            str(out / f"{f.stem}_{w}.jpg"),
        ]
        for f in files
        for w in widths
    ]
    timed = _timed(jobs, processes, {"MAGICK_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "1"})
    return _result("convert", files, out, widths, timed, processes)


def _result(
    name: str,
    files: list[Path],
    out: Path,
    widths: tuple[int, ...],
    timed: tuple[float, float, float],
    processes: int,
) -> dict[str, Any]:
    wall, cpu, other = timed
    made = sum(1 for f in files for w in widths if (out / f"{f.stem}_{w}.jpg").exists())
    if made != len(files) * len(widths):
        raise RuntimeError(f"{name} made {made} of {len(files) * len(widths)} thumbnails")
    return {
        "tool": name,
        "photos": len(files),
        "processes": processes,
        "seconds": wall,
        "photos_per_s": len(files) / wall,
        "cpu_ms_per_photo": cpu / len(files) * 1000,
        "other_load_cores": other,
    }
