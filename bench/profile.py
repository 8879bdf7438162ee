"""`--profile`: an extra burst under py-spy (not timed), summarised by where CPU time went.

py-spy samples the daemon and every process below it without stopping them (--nonblocking);
the summary splits the samples into the daemon's own threads and the workers, and lists the
functions that were on CPU most often (self time) and the thumbd functions they ran under.
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.corpus import Copies
from bench.daemon_run import DaemonRun, drop

FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def run(copies: Copies, work: Path, n: int, workers: int, out: Path) -> dict[str, Any]:
    exe = py_spy()
    if exe is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    run_dir = work / "profile"
    staged = copies.stage(run_dir / "staging", n, "p")
    raw = out.with_suffix(".txt")
    daemon = DaemonRun(run_dir, workers)
    with daemon:
        daemon.start()
        daemon.wait_ready()
        spy = subprocess.Popen(
            [
                exe,
                "record",
                "--subprocesses",
                "--nonblocking",
                "-r",
                "97",
                "-f",
                "raw",
                "-o",
                str(raw),
                "-p",
                str(daemon.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # py-spy attaches
        drop(staged, daemon.incoming)
        daemon.wait_done(n, timeout=max(120.0, 2 * n))
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    if not raw.exists():
        return {"skipped": "py-spy wrote nothing (is ptrace allowed?)"}
    return summarise(raw)


def summarise(raw: Path, top: int = 12) -> dict[str, Any]:
    samples: collections.Counter[str] = collections.Counter()
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    under: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        part = _part(frames)
        if part is None:
            continue
        calls = [_short(f) for f in frames if FRAME.match(f)]
        if not calls or _idle(calls[-1]):
            continue
        samples[part] += count
        own[part][calls[-1]] += count
        for name in set(c for c in calls if "thumbd/" in c):
            under[part][name] += count
    total = sum(samples.values()) or 1
    return {
        "samples": dict(samples),
        "share": {k: round(v / total, 3) for k, v in samples.items()},
        "self": {k: own[k].most_common(top) for k in samples},
        "thumbd_inclusive": {k: under[k].most_common(top) for k in samples},
    }


def _part(frames: list[str]) -> str | None:
    """'workers', or the daemon thread the stack ran on."""
    text = ";".join(frames[:4])
    if "forkserver" in text or "_worker_main" in ";".join(frames):
        return "workers"
    if "thumbd run" not in frames[0]:
        return None
    for f in frames[1:]:
        m = FRAME.match(f)
        if m is None:
            continue
        if "thumbd/daemon.py" in f or "runpy" in f:
            return "daemon main thread"
        if "executor.py" in f:
            return "daemon pool thread"
        if "watchdog" in f:
            return "daemon watchdog threads"
    return "daemon other threads"


def _short(frame: str) -> str:
    m = FRAME.match(frame)
    if m is None:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "python3.11/", "/thumbd/"):
        if marker in path:
            path = ("thumbd/" if marker == "/thumbd/" else "") + path.split(marker, 1)[1]
            break
    return f"{m.group('fn')} ({path})"


# Where a thread waits rather than works. py-spy's own idle detection misses some of these.
IDLE = (
    "select (selectors.py)",
    "wait (threading.py)",
    "Condition.wait",
    "_check_inotify_fd",
    "_recv (multiprocessing/connection.py)",
    "next_message",
)


def _idle(frame: str) -> bool:
    return any(marker in frame for marker in IDLE)
