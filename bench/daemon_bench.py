"""Parts 2, 4 and 5: the whole daemon, as a user runs it (`thumbd run`, a real subprocess).

- burst: N photos moved into incoming/ at once (renames on the same filesystem, the way a
  sync client or `mv` delivers finished files); time until the last thumbnail exists.
- soak: the same, in rounds, to see whether memory grows from round to round.
- light: photos offered at a steady rate; latency from each drop to its last thumbnail.
- startup: a tree of already-done sources (files plus matching state rows, built directly
  rather than rendered); time from the daemon's launch until its start-up scan has finished.

Nothing is deleted until the whole run ends: on a filesystem without a journal (like the root of
the machine these numbers come from), ext4 will not reuse an inode deleted in the last minute or
more and checks every such inode again for each file it creates, so deleting one part's files
makes the next part's thumbnails expensive to create.

Latency is measured from the moment a file was renamed into incoming/ to the mtime of the last
of its thumbnails (written just before its atomic rename into place). Memory is the resident
set size of the daemon plus every process below it (fork server, workers), sampled from /proc.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.corpus import Copies
from bench.daemon_run import (
    DaemonRun,
    drop,
    drop_paced,
    latencies,
    monitored,
    percentile,
)
from bench.procmon import machine_busy_seconds
from thumbd.render.pipeline import render
from thumbd.render.spec import RenderSpec
from thumbd.store.state import State

DONE_LINE = re.compile(rb"\] done .* render (\d+) ms\)")
# "done a.jpg: 3 thumbnails in 25 ms (waited 2 ms, render 18 ms)": the time from the moment the
# file had settled (taken) to its thumbnails in place, the part of it spent waiting for a
# worker, and the worker's CPU time for it.
TAKEN_TO_DONE = re.compile(
    rb"\] done (\S+): \d+ thumbnails? in (\d+) ms \(waited \d+ ms, render (\d+) ms\)"
)


def _render_ms_from_log(run: DaemonRun) -> list[float]:
    return [float(m) for m in DONE_LINE.findall(run.log.read_bytes())]


def _summary(lat: list[float], first: float, last: float, n: int) -> dict[str, Any]:
    seconds = last - first
    return {
        "photos": n,
        "completed": len(lat),
        "seconds": seconds,
        "photos_per_s": len(lat) / seconds if seconds > 0 else float("nan"),
        "latency_p50_ms": percentile(lat, 50) * 1000,
        "latency_p99_ms": percentile(lat, 99) * 1000,
        "latency_max_ms": max(lat) * 1000 if lat else float("nan"),
    }


def burst(copies: Copies, work: Path, n: int, workers: int, env: dict[str, str]) -> dict[str, Any]:
    """Drop n photos at once into a fresh daemon; wait for every thumbnail."""
    run_dir = work / f"burst-{n}"
    staged = copies.stage(run_dir / "staging", n, "b")
    run = DaemonRun(run_dir, workers)
    with run:
        run.start(env)
        run.wait_ready()
        with monitored(run.pid) as mon:
            dropped = drop(staged, run.incoming)
            run.wait_done(n, timeout=max(120.0, n))
        lat, first, last = latencies(run, dropped)
    main_cpu, tree_cpu = mon.cpu_used()
    result = _summary(lat, first, last, n)
    rendered = _render_ms_from_log(run)
    result.update(mon.peak())
    result.update(
        {
            "failed": run.failed_lines,
            "cpu_ms_per_photo": tree_cpu / n * 1000,
            "main_cpu_ms_per_photo": main_cpu / n * 1000,
            "render_cpu_ms_in_workers": statistics.fmean(rendered) if rendered else None,
            "other_load_cores": _other_load(mon.machine_busy, tree_cpu, mon.samples[-1].t),
        }
    )
    return result


def soak(
    copies: Copies, work: Path, total: int, rounds: int, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    """total photos in `rounds` bursts into one daemon: memory and speed per round."""
    run_dir = work / f"soak-{total}"
    per_round = total // rounds
    run = DaemonRun(run_dir, workers)
    results = []
    with run:
        run.start(env)
        run.wait_ready()
        with monitored(run.pid) as mon:
            for r in range(rounds):
                staged = copies.stage(run_dir / "staging", per_round, f"s{r:02d}")
                before = len(mon.samples)
                dropped = drop(staged, run.incoming)
                run.wait_done((r + 1) * per_round, timeout=max(120.0, per_round))
                lat, first, last = latencies(run, dropped)
                in_round = mon.samples[before:] or mon.samples[-1:]
                round_result = _summary(lat, first, last, per_round)
                round_result["peak_rss_mb"] = max(s.tree for s in in_round) / 1e6
                round_result["end_rss_mb"] = in_round[-1].tree / 1e6
                round_result["main_rss_mb"] = in_round[-1].main / 1e6
                results.append(round_result)
    peaks = [r["peak_rss_mb"] for r in results]
    return {
        "photos": per_round * rounds,
        "rounds": results,
        "first_round_peak_rss_mb": peaks[0],
        "last_round_peak_rss_mb": peaks[-1],
        "peak_rss_mb": max(peaks),
        "photos_per_s": statistics.fmean(r["photos_per_s"] for r in results),
    }


def light(
    copies: Copies, work: Path, rate: float, seconds: float, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    """Photos offered at `rate` per second for `seconds`: drop-to-thumbnail latency."""
    n = max(1, round(rate * seconds))
    run_dir = work / "light"
    staged = copies.stage(run_dir / "staging", n, "l")
    run = DaemonRun(run_dir, workers)
    with run:
        run.start(env)
        run.wait_ready()
        time.sleep(1.0)  # let the workers finish starting: latency, not start-up, is measured
        with monitored(run.pid) as mon:
            dropped = drop_paced(staged, run.incoming, rate)
            run.wait_done(n, timeout=120 + n)
        lat, first, last = latencies(run, dropped)
    result = _summary(lat, first, last, n)
    result.update(_where_latency_goes(run, dropped))
    result["rate"] = rate
    result.update(mon.peak())
    result["other_load_cores"] = _other_load(mon.machine_busy, mon.cpu_used()[1], mon.samples[-1].t)
    return result


def backlog(
    copies: Copies, work: Path, size: int, probes: int, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    """A backlog of `size` photos found by the start-up scan, and `probes` new photos dropped
    one every half second while it is worked: how long a new photo waits for its thumbnails."""
    run_dir = work / f"backlog-{size}"
    run = DaemonRun(run_dir, workers)
    for f in copies.stage(run_dir / "staging-backlog", size, "k"):
        os.rename(f, run.incoming / f.name)
    staged = copies.stage(run_dir / "staging-new", probes, "n")
    with run:
        started = time.monotonic()
        run.start(env)
        run.wait_ready()
        run.wait_for("the backlog to start", lambda: run.done_lines >= workers * 2, 600)
        dropped = drop_paced(staged, run.incoming, 2.0)
        run.wait_done(size + probes, timeout=max(600.0, size))
        seconds = time.monotonic() - started
        lat, _, _ = latencies(run, dropped)
        backlog_left = size + probes - run.done_lines
    return {
        "backlog": size,
        "probes": probes,
        "completed": len(lat),
        "latency_p50_ms": percentile(lat, 50) * 1000,
        "latency_p99_ms": percentile(lat, 99) * 1000,
        "latency_max_ms": max(lat) * 1000 if lat else float("nan"),
        "backlog_seconds": seconds,
        "backlog_left": backlog_left,
    }


def _where_latency_goes(run: DaemonRun, dropped: dict[str, float]) -> dict[str, float]:
    """Split each file's latency: drop -> taken (settling, waiting for the main loop) and
    taken -> thumbnails in place (queue, render, write); p50 and p99 of each, in ms."""
    settling, working, rendering = [], [], []
    for m in TAKEN_TO_DONE.finditer(run.log.read_bytes()):
        name = m.group(1).decode()
        written = run.last_thumbnail_time(name)
        if name not in dropped or written is None:
            continue
        total = (written - dropped[name]) * 1000
        work = float(m.group(2))
        settling.append(max(0.0, total - work) / 1000)
        working.append(work / 1000)
        rendering.append(float(m.group(3)) / 1000)
    out = {}
    for label, values in (("settle", settling), ("work", working), ("render", rendering)):
        out[f"{label}_p50_ms"] = percentile(values, 50) * 1000
        out[f"{label}_p99_ms"] = percentile(values, 99) * 1000
    return out


def render_alone(files: list[Path], workers: int, spec: RenderSpec) -> dict[str, Any]:
    """render() over the photos in `workers` processes and nothing else: the ceiling for the
    daemon's photos per second on this machine."""
    shares = [[str(f) for f in files[i::workers]] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_render_all, [s[:4] for s in shares], [spec] * workers))  # warm up
        busy0 = machine_busy_seconds()
        started = time.monotonic()
        cpu = sum(pool.map(_render_all, shares, [spec] * workers))
        wall = time.monotonic() - started
        busy = machine_busy_seconds() - busy0
    return {
        "photos": len(files),
        "processes": workers,
        "seconds": wall,
        "photos_per_s": len(files) / wall,
        "cpu_ms_per_photo": cpu / len(files) * 1000,
        "other_load_cores": _other_load(busy, cpu, wall),
    }


def _render_all(paths: list[str], spec: RenderSpec) -> float:
    started = time.process_time()
    for p in paths:
        render(p, spec)
    return time.process_time() - started


# -- start-up over a tree of done sources ---------------------------------------------------


def build_done_tree(root: Path, count: int, sample: bytes, per_folder: int = 100) -> None:
    """`count` small files in folders of `per_folder`, each with a done state row for exactly
    its signature: what a daemon leaves after it rendered them all."""
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    state = State(root / "state" / "thumbd.db")
    try:
        with state.transaction():
            for i in range(count):
                folder = f"{i // per_folder:05d}"
                if i % per_folder == 0:
                    (incoming / folder).mkdir()
                rel = f"{folder}/IMG_{i:07d}.jpg"
                path = str(incoming / rel)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, sample)
                st = os.fstat(fd)
                os.close(fd)
                outputs = [f"{folder}/IMG_{i:07d}_{w}.jpg" for w in (200, 64, 32)]
                sig = (st.st_size, st.st_mtime_ns, st.st_ino)
                state.record_done(rel, sig, outputs, st.st_size, 3 * 4000)
    finally:
        state.close()


def startup(
    work: Path,
    count: int,
    sample: bytes,
    workers: int,
    env: dict[str, str],
    copies: Copies | None = None,
    burst_size: int = 0,
) -> dict[str, Any]:
    """Launch to the end of the start-up scan over `count` done sources; then, with `copies`,
    a burst of `burst_size` photos into that tree (does speed depend on the tree's size?)."""
    run_dir = work / f"startup-{count}"
    started = time.monotonic()
    build_done_tree(run_dir, count, sample)
    built = time.monotonic() - started
    run = DaemonRun(run_dir, workers)
    burst_result: dict[str, Any] = {}
    with run:
        run.start(env)
        with monitored(run.pid) as mon:
            ready = run.wait_ready(timeout=600)
        rescheduled = run.done_lines + run.failed_lines
        log_tail = run.tail(3)
        if copies is not None and burst_size:
            staged = copies.stage(run_dir / "staging", burst_size, "t")
            with monitored(run.pid) as burst_mon:
                dropped = drop(staged, run.incoming)
                run.wait_done(rescheduled + burst_size, timeout=max(120.0, burst_size))
            lat, first, last = latencies(run, dropped)
            burst_result = _summary(lat, first, last, burst_size)
            burst_result["peak_rss_mb"] = burst_mon.peak()["peak_rss_mb"]
    scan = re.search(r"scan of .*: (\d+) to look at", log_tail)
    return {
        "sources": count,
        "seconds": ready - run.started_at,
        "to_look_at": int(scan.group(1)) if scan else None,
        "rendered_again": rescheduled,
        "build_seconds": built,
        **mon.peak(),
        "burst_into_tree": burst_result,
    }


def _other_load(machine_busy: float, ours: float, seconds: float) -> float:
    """Average number of cores busy with something other than the daemon during a run."""
    return max(0.0, (machine_busy - ours) / seconds) if seconds > 0 else 0.0


__all__ = ["burst", "light", "machine_busy_seconds", "render_alone", "soak", "startup"]
