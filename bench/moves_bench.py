"""Part "moves": renames, moves and copies, which should cost no render (issue 17).

- rename_running: a done tree of N sources in one folder (files, state rows and thumbnails,
  built directly rather than rendered); the folder is renamed while thumbd runs. Timed from
  the rename to the daemon's `moved ... : N sources, 0 rendered` line (the outgoing folder is
  renamed and the rows moved by then); renders counted from the log.
- rename_stopped: the same tree renamed while thumbd is stopped; timed from the launch until
  every source is recorded under its new path (read from the state), renders counted.
- copies: N photos of which half are byte-identical copies (real copies: other inodes) of the
  other half, moved in together, each copy right after its original; then the unique half
  alone into a fresh daemon. Renders counted, and the unique photos' throughput in both runs.
- hashing: N photos of distinct sizes (no same-size candidate): the digests the main loop took
  (the daemon's live figures, `hashed`), which should be 0.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.corpus import Copies
from bench.daemon_run import DaemonRun, drop
from thumbd.store.state import State

OLD, NEW = "album", "2024 Lisbon"


def build_tree(root: Path, count: int, sample: bytes, per_folder: int = 100) -> None:
    """`count` sources below incoming/album/, each with a done row for its signature and its
    three thumbnails in outgoing/ (small stand-ins): what a daemon leaves after a render."""
    incoming, outgoing = root / "incoming", root / "outgoing"
    state = State(root / "state" / "thumbd.db")
    try:
        with state.transaction():
            for i in range(count):
                folder = f"{OLD}/{i // per_folder:05d}"
                if i % per_folder == 0:
                    (incoming / folder).mkdir(parents=True)
                    (outgoing / folder).mkdir(parents=True)
                rel = f"{folder}/IMG_{i:07d}.jpg"
                fd = os.open(incoming / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, sample)
                st = os.fstat(fd)
                os.close(fd)
                outputs = [f"{folder}/IMG_{i:07d}_{w}.jpg" for w in (200, 64, 32)]
                for name in outputs:
                    (outgoing / name).write_bytes(sample[:2000])
                sig = (st.st_size, st.st_mtime_ns, st.st_ino)
                state.record_done(rel, sig, outputs, st.st_size, 6000)
    finally:
        state.close()


def _under_new(root: Path) -> int:
    conn = sqlite3.connect(f"file:{root / 'state' / 'thumbd.db'}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute(
            "SELECT count(*) FROM sources WHERE path > ? AND path < ?", (f"{NEW}/", f"{NEW}0")
        ).fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
    return int(row[0])


def rename_running(
    work: Path, count: int, sample: bytes, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    run_dir = work / f"rename-running-{count}"
    build_tree(run_dir, count, sample)
    run = DaemonRun(run_dir, workers)
    with run:
        run.start(env)
        run.wait_ready(timeout=600)
        renders_before = run.done_lines
        t0 = time.monotonic()
        os.rename(run.incoming / OLD, run.incoming / NEW)
        seen = run.wait_for(
            "the move", lambda: f"moved {OLD} -> {NEW}:" in run.tail(5), timeout=300
        )
        consistent = (run.outgoing / NEW).is_dir() and not (run.outgoing / OLD).exists()
        time.sleep(2)  # anything the move wrongly started would show in the log by now
        run.poll_log()
        line = next(ln for ln in run.tail(20).splitlines() if f"moved {OLD} -> {NEW}:" in ln)
    return {
        "sources": count,
        "seconds": seen - t0,
        "consistent": consistent and _under_new(run_dir) == count,
        "renders": run.done_lines - renders_before,
        "line": line.split("] ", 1)[-1],
    }


def rename_stopped(
    work: Path, count: int, sample: bytes, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    run_dir = work / f"rename-stopped-{count}"
    build_tree(run_dir, count, sample)
    os.rename(run_dir / "incoming" / OLD, run_dir / "incoming" / NEW)  # thumbd was stopped
    run = DaemonRun(run_dir, workers)
    with run:
        run.start(env)
        deadline = time.monotonic() + 600
        while _under_new(run_dir) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        seconds = time.monotonic() - run.started_at
        time.sleep(2)
        run.poll_log()
    return {
        "sources": count,
        "seconds": seconds,
        "consistent": _under_new(run_dir) == count and not (run.outgoing / OLD).exists(),
        "renders": run.done_lines,
    }


def copies(
    copies_: Copies, work: Path, n: int, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    half = n // 2
    run_dir = work / f"copies-{n}"
    staged = copies_.stage(run_dir / "staging", half, "u")
    order: list[Path] = []
    for path in staged:
        twin = path.with_name(f"copy-{path.name}")
        shutil.copyfile(path, twin)  # the same bytes, another inode
        order += [path, twin]
    run = DaemonRun(run_dir, workers)
    with run:
        run.start(env)
        run.wait_ready()
        t0 = time.monotonic()
        drop(order, run.incoming)
        run.wait_for("every file done", lambda: _recorded(run_dir) >= n, timeout=max(600, n))
        mixed = time.monotonic() - t0
        run.poll_log()
        renders = run.done_lines
    alone_dir = work / f"copies-alone-{half}"
    alone = copies_.stage(alone_dir / "staging", half, "u")
    run2 = DaemonRun(alone_dir, workers)
    with run2:
        run2.start(env)
        run2.wait_ready()
        t1 = time.monotonic()
        drop(alone, run2.incoming)
        # Timed as the mixed run is, by the records: the log's done lines come before them.
        run2.wait_for("every file done", lambda: _recorded(alone_dir) >= half, timeout=max(600, n))
        unique_alone = time.monotonic() - t1
    return {
        "files": n,
        "copies": n - half,
        "renders": renders,
        "seconds": mixed,
        "unique_per_second": half / mixed,
        "unique_alone_per_second": half / unique_alone,
    }


def _recorded(run_dir: Path) -> int:
    conn = sqlite3.connect(f"file:{run_dir / 'state' / 'thumbd.db'}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM sources WHERE status = 'done'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def hashing(
    copies_: Copies, work: Path, n: int, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    run_dir = work / f"hashing-{n}"
    staged = copies_.stage(run_dir / "staging", n, "h")
    sizes = {p.stat().st_size for p in staged}
    run = DaemonRun(run_dir, workers)
    with run:
        run.start(env)
        run.wait_ready()
        drop(staged, run.incoming)
        run.wait_done(n, timeout=max(600, n))
        time.sleep(2.5)  # the live figures are written every 2 s
        live = json.loads((run_dir / "state" / "status.json").read_text())
    return {
        "files": n,
        "distinct_sizes": len(sizes) == n,
        "main_loop_digests": live.get("hashed"),
        "reused": live.get("reused"),
    }


def table(r: dict[str, Any]) -> str:
    lines = ["moves, renames and copies"]
    for key, label, target in (
        ("rename_running", "rename a folder while running", 2.0),
        ("rename_stopped", "the same while stopped, then start", 10.0),
    ):
        row = r.get(key)
        if row:
            ok = row["consistent"] and row["renders"] == 0 and row["seconds"] <= target
            lines.append(
                f"  {label} ({row['sources']:,} sources): consistent in {row['seconds']:.2f} s"
                f" (target <= {target:g} s), {row['renders']} renders{'' if ok else '  MISSED'}"
            )
    c = r.get("copies")
    if c:
        lines.append(
            f"  import {c['files']:,} photos, {c['copies']:,} of them copies: {c['renders']:,}"
            f" renders in {c['seconds']:.1f} s; unique ones {c['unique_per_second']:.1f}/s"
            f" (alone {c['unique_alone_per_second']:.1f}/s)"
        )
    h = r.get("hashing")
    if h:
        lines.append(
            f"  {h['files']:,} photos of distinct sizes: {h['main_loop_digests']} digests taken"
            " by the main loop"
        )
    return "\n".join(lines)
