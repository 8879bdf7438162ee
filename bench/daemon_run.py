"""A real `thumbd run` subprocess on a folder of its own, and the measures of what it did."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.procmon import Monitor

WIDTHS = (200, 64, 32)


class DaemonRun:
    """`thumbd run` on run_dir/{incoming,outgoing,state}, logging to run_dir/thumbd.log."""

    def __init__(self, run_dir: Path, workers: int, extra: dict[str, dict[str, Any]] | None = None):
        self.dir = run_dir
        self.incoming = run_dir / "incoming"
        self.outgoing = run_dir / "outgoing"
        self.log = run_dir / "thumbd.log"
        self.config = run_dir / "thumbd.toml"
        self.workers = workers
        self.incoming.mkdir(parents=True, exist_ok=True)
        settings: dict[str, dict[str, Any]] = {
            "paths": {"incoming": "incoming", "outgoing": "outgoing", "state": "state"},
            "resize": {"workers": workers},
        }
        for section, values in (extra or {}).items():
            settings.setdefault(section, {}).update(values)
        lines = []
        for section, values in settings.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self.done_lines = 0
        self.failed_lines = 0
        self.scans_finished = 0
        self.started_at = 0.0

    def start(self, env: dict[str, str] | None = None) -> DaemonRun:
        self.started_at = time.monotonic()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "thumbd", "run", "-c", str(self.config)],
                stdout=log,
                stderr=log,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def poll_log(self) -> None:
        """Read what the daemon logged since the last call and count what matters."""
        with self.log.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for line in chunk[:end].splitlines():
            if b"] done " in line:
                self.done_lines += 1
            elif b"] failed " in line:
                self.failed_lines += 1
            elif b"] scan of " in line:
                self.scans_finished += 1

    def wait_for(self, what: str, predicate: Any, timeout: float) -> float:
        """Poll the log until predicate() holds; return the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll_log()
            if predicate():
                return time.monotonic()
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"thumbd exited ({self.proc.returncode}) waiting for {what}:\n" + self.tail()
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"timed out after {timeout:.0f} s waiting for {what}:\n" + self.tail()
                )
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 600) -> float:
        """Until the start-up scan has finished: the daemon is idle and watching."""
        return self.wait_for("the start-up scan", lambda: self.scans_finished >= 1, timeout)

    def wait_done(self, count: int, timeout: float) -> float:
        return self.wait_for(
            f"{count} files done", lambda: self.done_lines + self.failed_lines >= count, timeout
        )

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __enter__(self) -> DaemonRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def last_thumbnail_time(self, name: str) -> float | None:
        """Wall-clock time the last of a source's thumbnails was written (its mtime)."""
        stem = Path(name).stem
        times = []
        for w in WIDTHS:
            try:
                times.append(os.stat(self.outgoing / f"{stem}_{w}.jpg").st_mtime_ns / 1e9)
            except FileNotFoundError:
                return None
        return max(times)


def drop(files: list[Path], incoming: Path) -> dict[str, float]:
    """Move every file into incoming/ as fast as possible; their wall-clock drop times."""
    dropped = {}
    for f in files:
        os.rename(f, incoming / f.name)
        dropped[f.name] = time.time()
    return dropped


def drop_paced(files: list[Path], incoming: Path, rate: float) -> dict[str, float]:
    """Move files in at `rate` per second on a fixed schedule (no drift from late wake-ups)."""
    dropped = {}
    start = time.monotonic()
    for i, f in enumerate(files):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        os.rename(f, incoming / f.name)
        dropped[f.name] = time.time()
    return dropped


def latencies(run: DaemonRun, dropped: dict[str, float]) -> tuple[list[float], float, float]:
    """Per file: seconds from its drop to its last thumbnail; plus first drop and last write."""
    lat = []
    last = 0.0
    for name, t in dropped.items():
        written = run.last_thumbnail_time(name)
        if written is None:
            continue
        lat.append(max(0.0, written - t))
        last = max(last, written)
    return lat, min(dropped.values()), last


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(p * 10) - 1]


def monitored(pid: int) -> Monitor:
    return Monitor(pid, interval=0.2)
