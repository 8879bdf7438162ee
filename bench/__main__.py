"""`python -m bench`: every thumbd benchmark in one invocation; prints a table, writes JSON.

Benchmarks, not tests: nothing here passes or fails, it measures. The photos are read where
they are (../shared/corpus/photos by default) and copied to N unique names in a temporary
folder outside the repository, on the same filesystem as the daemon's incoming/ folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import PIL
from PIL import features

from bench import (
    baselines,
    daemon_bench,
    download_bench,
    formats_bench,
    moves_bench,
    profile,
    render_bench,
    report,
)
from bench.corpus import Copies, Photo, default_corpus, load
from bench.procmon import wait_for_quiet
from thumbd.render.spec import RenderSpec

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = (
    "render",
    "burst",
    "baselines",
    "light",
    "backlog",
    "soak",
    "startup",
    "scale",
    "formats",
    "downloads",
    "dask",
    "moves",
)
# The phone photos in the corpus: the targets are for phone JPEGs (none is 12 MP; the
# largest are 8-9 MP).
PHONE = {"HMD_Nokia_8.3_5G.jpg", "iphone_hdr_NO.jpg", "jolla.jpg"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--corpus", type=Path, default=None, help="folder of JPEG photos")
    p.add_argument("-n", "--photos", type=int, default=1000, help="photos in the burst (1000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="thumbd workers")
    p.add_argument("--repeat", type=int, default=15, help="repeats per photo in part 1")
    p.add_argument("--magick-photos", type=int, default=60, help="photos through convert")
    p.add_argument("--light-rate", type=float, default=10.0, help="photos/s offered (10)")
    p.add_argument("--light-seconds", type=float, default=20.0)
    p.add_argument("--soak", type=int, default=10_000, help="photos in the soak (0: skip)")
    p.add_argument(
        "--backlog", type=int, default=10_000, help="photos in the backlog new files overtake"
    )
    p.add_argument(
        "--startup",
        type=int,
        nargs="*",
        default=[1_000, 10_000, 100_000],
        help="sizes of done trees to start over",
    )
    p.add_argument("--moves", type=int, default=10_000, help="sources in the renamed folder")
    p.add_argument("--copies", type=int, default=10_000, help="photos (half copies) imported")
    p.add_argument("--skip", nargs="*", choices=PARTS, default=[], help="parts to leave out")
    p.add_argument("--only", nargs="*", choices=PARTS, default=None, help="run just these parts")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run in ~1 min")
    p.add_argument("--profile", action="store_true", help="an extra burst under py-spy")
    p.add_argument("--workdir", type=Path, default=None, help="temporary folder (default: /tmp)")
    p.add_argument("--json", type=Path, default=None, help="results file (bench/results/...)")
    p.add_argument("--chart", type=Path, default=None, help="chart PNG (bench/results/...)")
    p.add_argument(
        "--malloc-arena-max",
        default=None,
        help="run the daemon with MALLOC_ARENA_MAX set to this (to compare)",
    )
    p.add_argument(
        "--tree-burst",
        type=int,
        default=300,
        help="photos dropped into each start-up tree once it is up (0: none)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="seconds to wait before each timed part for other load to end (0: do not wait)",
    )
    p.add_argument(
        "--quiet-below",
        type=float,
        default=0.3,
        help="cores busy with other work that still count as quiet (0.3)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.photos, args.repeat, args.magick_photos = 120, 5, 12
        args.light_seconds, args.soak, args.startup = 5.0, 0, [1_000, 10_000]
        args.tree_burst, args.backlog = 60, 600
        args.moves, args.copies = 1_000, 200
    return args


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1e6, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo") or features.version("jpg"),
        "vips": baselines.vips_version(),
        "imagemagick": baselines.magick_version(),
        "load_before": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = set(args.only) if args.only else set(PARTS) - set(args.skip)
    corpus = args.corpus or default_corpus()
    photos = load(corpus)
    spec = RenderSpec()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {
        "when": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {
            "corpus": str(corpus),
            "photos": [p.name for p in photos],
            "burst_photos": args.photos,
            "workers": args.workers,
            "widths": list(spec.widths),
            "quality": spec.quality,
        },
    }
    env = {} if args.malloc_arena_max is None else {"MALLOC_ARENA_MAX": args.malloc_arena_max}
    quiet: dict[str, float] = {}
    results["load_before_part"] = quiet

    def before(part: str) -> None:
        if args.quiet_wait > 0:
            quiet[part] = wait_for_quiet(args.quiet_below, args.quiet_wait, say)

    with tempfile.TemporaryDirectory(prefix="thumbd-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        say(f"corpus {corpus}: {len(photos)} photos; work folder {work}")
        if "render" in wanted:
            before("render")
            results["render"] = part_render(photos, spec, args.repeat, work, "scale" in wanted)
        copies = None
        if (
            wanted & {"burst", "baselines", "light", "backlog", "soak"}
            or args.profile
            or args.tree_burst
        ):
            say(f"copying the corpus to {args.photos} unique names")
            copies = Copies(photos, args.photos, work / "copies")
        if copies is not None and "burst" in wanted:
            before("burst")
            say(f"burst: {args.photos} photos into a running daemon")
            results["burst"] = daemon_bench.burst(copies, work, args.photos, args.workers, env)
            before("render_alone")
            say("render() alone in a pool of the same size, same photos")
            results["render_alone"] = daemon_bench.render_alone(copies.files, args.workers, spec)
        if copies is not None and "baselines" in wanted:
            results["baselines"] = part_baselines(copies, work, args, spec, before)
        if copies is not None and "light" in wanted:
            before("light")
            say(f"light load: {args.light_rate:g} photos/s for {args.light_seconds:g} s")
            results["light"] = daemon_bench.light(
                copies, work, args.light_rate, args.light_seconds, args.workers, env
            )
        if copies is not None and "backlog" in wanted and args.backlog:
            before("backlog")
            say(f"backlog: {args.backlog} photos, and 20 new ones dropped while it is worked")
            results["backlog"] = daemon_bench.backlog(
                copies, work, args.backlog, 20, args.workers, env
            )
        if copies is not None and "soak" in wanted and args.soak:
            before("soak")
            say(f"soak: {args.soak} photos in 10 rounds into one daemon")
            results["soak"] = daemon_bench.soak(copies, work, args.soak, 10, args.workers, env)
        if "startup" in wanted:
            before("startup")
            results["startup"] = part_startup(
                photos, work, args.startup, args.workers, env, copies, args.tree_burst
            )
        if "formats" in wanted:
            before("formats")
            say("formats: HEIC, camera RAW and video posters; HEIC end to end beside vipsthumbnail")
            n = 40 if args.quick else 200
            results["formats"] = formats_bench.run(work / "formats", n, args.workers, args.repeat)
        if "downloads" in wanted:
            before("downloads")
            say(
                "downloads: 2,000 URLs over 20 loopback hosts, and one host; the threaded stage too"
            )
            small = ["--urls", "400", "--one-host-urls", "100", "--daemon-urls", "0"]
            dl_args = download_bench.parse_args(small if args.quick else [])
            results["downloads"] = download_bench.run(dl_args)
        if "moves" in wanted:
            before("moves")
            results["moves"] = part_moves(photos, work, args, env)
        if "dask" in wanted:
            before("dask")
            results["dask"] = part_dask(corpus, work / "dask", args.workers)
        if args.profile and copies is not None:
            say("profile: one more burst under py-spy (not timed)")
            raw = (args.json or RESULTS / f"{stamp}.json").with_name(f"profile-{stamp}.txt")
            raw.parent.mkdir(parents=True, exist_ok=True)
            results["profile"] = profile.run(copies, work, args.photos, args.workers, raw)
    results["machine"]["load_after"] = os.getloadavg()
    print()
    print(report.table(results))
    if "formats" in results:
        print("\n" + formats_bench.table(results["formats"]))
    if "downloads" in results:
        print("\n" + download_bench.table(results["downloads"]))
    if "moves" in results:
        print("\n" + moves_bench.table(results["moves"]))
    if "dask" in results:
        print(f"\nDask: {results['dask'].get('line') or results['dask'].get('skipped')}")
    write_outputs(results, args, stamp)
    return 0


def part_moves(
    photos: list[Photo], work: Path, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    """Renames and copies: the rows of issue 17."""
    sample = photos[0].path.read_bytes()
    out: dict[str, Any] = {}
    say(f"moves: rename a folder of {args.moves} done sources while running")
    out["rename_running"] = moves_bench.rename_running(work, args.moves, sample, args.workers, env)
    say("moves: the same while stopped, then start")
    out["rename_stopped"] = moves_bench.rename_stopped(work, args.moves, sample, args.workers, env)
    if args.copies:
        copies = Copies(photos, args.copies // 2, work / "moves-copies")
        say(f"moves: import {args.copies} photos, half of them copies; then the unique half alone")
        out["copies"] = moves_bench.copies(copies, work, args.copies, args.workers, env)
        say(f"moves: {args.copies // 2} photos of distinct sizes, digests taken by the main loop")
        out["hashing"] = moves_bench.hashing(copies, work, args.copies // 2, args.workers, env)
    return out


def part_dask(corpus: Path, work: Path, workers: int) -> dict[str, Any]:
    """The end-to-end row with a LocalCluster of as many workers next to the local pool."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return {"skipped": "distributed is not installed (pip install -e '.[dask]')"}
    from bench.dask_row import dask_row

    say(f"dask: thumbd once with the local pool, then with a {workers}-worker LocalCluster")
    row = dask_row(corpus, work, workers=workers)
    return {
        "files": row.files,
        "workers": row.workers,
        "local_seconds": row.local_seconds,
        "dask_seconds": row.dask_seconds,
        "ratio": row.ratio,
        "line": row.line(),
    }


def part_render(
    photos: list[Photo], spec: RenderSpec, repeat: int, work: Path, scale: bool
) -> dict[str, Any]:
    say(f"render(): {len(photos)} photos x {repeat} repeats (floor, render, seed)")
    measured = render_bench.measure(photos, spec, repeat)
    measured["phone_summary"] = render_bench.summarize(measured["photos"], PHONE)
    if scale:
        say("render() at 1, 12 and 50 MP, and 12 MP taken upright (tiled from the largest photo)")
        largest = max(photos, key=lambda p: p.megapixels)
        made = render_bench.scale_photos(largest, work / "scale", (1.0, 12.0, 50.0), (12.0,))
        measured["scale"] = render_bench.measure(made, spec, max(3, repeat // 3))["photos"]
        for row, photo in zip(measured["scale"], made, strict=True):
            row["rss_before_mb"], row["rss_after_mb"] = render_bench.render_rss_mb(photo)
    return measured


def part_baselines(
    copies: Copies,
    work: Path,
    args: argparse.Namespace,
    spec: RenderSpec,
    before: Callable[[str], None],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    staged = copies.stage(work / "baseline-in", args.photos, "v")
    if baselines.vips_version() is None:
        say(f"vipsthumbnail is missing: skipped ({baselines.HOW_TO_INSTALL})")
    else:
        before("vipsthumbnail")
        say(f"vipsthumbnail: {len(staged)} photos, {args.workers} processes")
        out.append(
            baselines.vipsthumbnail(
                staged, work / "vips-out", spec.widths, spec.quality, args.workers
            )
        )
    if baselines.magick_version() is None:
        say(f"ImageMagick ({baselines.MAGICK}) is missing: skipped ({baselines.HOW_TO_INSTALL})")
    else:
        few = staged[: args.magick_photos]
        before("convert")
        say(f"ImageMagick convert: {len(few)} photos, {args.workers} processes")
        out.append(
            baselines.magick(few, work / "magick-out", spec.widths, spec.quality, args.workers)
        )
    return out


def part_startup(
    photos: list[Photo],
    work: Path,
    sizes: list[int],
    workers: int,
    env: dict[str, str],
    copies: Copies | None,
    burst_size: int,
) -> list[dict[str, Any]]:
    sample = min(photos, key=lambda p: p.bytes).path.read_bytes()[:4096]
    rows = []
    for count in sizes:
        say(f"start-up over {count} done sources (building the tree), then {burst_size} more")
        rows.append(daemon_bench.startup(work, count, sample, workers, env, copies, burst_size))
    return rows


def write_outputs(results: dict[str, Any], args: argparse.Namespace, stamp: str) -> None:
    path = args.json or RESULTS / f"{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    say(f"results: {path}")
    chart = args.chart or path.with_suffix(".png")
    if report.chart(results, chart):
        say(f"chart: {chart}")
    else:
        say("no chart: nothing to draw, or matplotlib is missing (make bench installs it)")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
