"""Live figures of a running daemon: the status file, systemd's STATUS= and watchdog, metrics.

The daemon's main loop hands a `Snapshot` to `Monitor.tick()` on every pass; the monitor decides
what is due. Every couple of seconds it writes `state/status.json` (atomically, for `thumbd
status`) and sends systemd a STATUS= line; at half of the watchdog interval it pings systemd,
but only while the daemon's health check passes, so that systemd restarts a daemon whose
observer or pool is gone for good.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from thumbd.service import metrics
from thumbd.service.notify import Notifier

log = logging.getLogger("thumbd.monitor")

STATUS_FILE = "status.json"
STATUS_INTERVAL = 2.0  # seconds between status.json writes and STATUS= lines
RATE_WINDOW = 60.0  # files per second are measured over this many seconds
HISTORY_MINUTES = 60  # files per minute kept for the status page's chart (bounded)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the main loop knows right now; built by Daemon.snapshot()."""

    settling: int
    ready: int
    in_flight: int
    done: int
    failed: int
    bytes_in: int
    bytes_out: int
    workers: int
    pool_restarts: int
    problem: str | None  # why the daemon is unhealthy, or None
    waiting: str | None = None  # what it waits for without being unhealthy (a Dask scheduler)
    finished: int = 0  # renders recorded, done or failed (a file failed then done: two)
    moved: int = 0  # sources whose thumbnails followed them (output/moves, output/reuse)
    reused: int = 0  # copies given a done source's thumbnails, not rendered
    hashed: int = 0  # digests the main loop took of new files (output/reuse)


class Monitor:
    def __init__(
        self,
        notifier: Notifier,
        state_dir: Path | None,
        started: float | None = None,
        sandbox: str | None = None,
    ) -> None:
        """`sandbox`: how the workers are confined, for `thumbd status`."""
        self.notifier = notifier
        self.sandbox = sandbox
        self.status_path = state_dir / STATUS_FILE if state_dir is not None else None
        # Unix time; `thumbd status` counts the records made since then as this run's.
        self.started = time.time() if started is None else started
        self.started_mono = time.monotonic()
        self.next_status = 0.0
        self.next_ping = 0.0
        self.samples: deque[tuple[float, int]] = deque()
        # [minute (Unix time, a multiple of 60), files done or failed in it], oldest first.
        self.history: deque[list[int]] = deque(maxlen=HISTORY_MINUTES)
        self.counted = 0
        self.problem: str | None = None
        self.restarts_seen = 0

    # -- lifecycle messages ----------------------------------------------------------------

    def ready(self, snap: Snapshot) -> None:
        self.notifier.ready(self.status_text(snap, time.monotonic()))

    def reloading(self) -> None:
        self.notifier.reloading()

    def reloaded(self) -> None:
        self.notifier.ready()

    def stopping(self, grace: float) -> None:
        self.notifier.stopping(grace)

    def close(self) -> None:
        if self.status_path is not None:
            with contextlib.suppress(OSError):
                self.status_path.unlink()
        self.notifier.close()

    # -- the periodic part -----------------------------------------------------------------

    def due(self) -> float:
        """The monotonic time of the next thing to do (never without a status file or systemd)."""
        if self.status_path is None and not self.notifier.enabled:
            return math.inf
        interval = self.notifier.watchdog_interval
        return self.next_status if interval is None else min(self.next_status, self.next_ping)

    def tick(self, now: float, snap: Snapshot) -> None:
        metrics.set_load(snap.settling + snap.ready, snap.in_flight)
        if snap.pool_restarts > self.restarts_seen:
            metrics.POOL_RESTARTS.inc(snap.pool_restarts - self.restarts_seen)
            self.restarts_seen = snap.pool_restarts
        self._health(snap.problem)
        if now >= self.next_status:
            self.next_status = now + STATUS_INTERVAL
            self._sample(now, snap.finished)
            self.notifier.status(self.status_text(snap, now))
            self.write_status(snap, now)
        interval = self.notifier.watchdog_interval
        if interval is not None and now >= self.next_ping:
            self.next_ping = now + interval
            if snap.problem is None:
                self.notifier.watchdog()

    def _health(self, problem: str | None) -> None:
        if problem != self.problem:
            if problem is not None:
                log.error("unhealthy: %s; not pinging the watchdog until this is resolved", problem)
            else:
                log.info("healthy again (%s resolved)", self.problem)
            self.problem = problem
        metrics.HEALTHY.set(problem is None)

    def _sample(self, now: float, total: int) -> None:
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        self._count_minute(time.time(), total)

    def _count_minute(self, wall: float, total: int) -> None:
        """Add what finished since the last sample to the current minute of the history.
        Minutes with no samples (the daemon was stopped) are simply absent."""
        added, self.counted = max(0, total - self.counted), total
        minute = int(wall // 60) * 60
        if self.history and self.history[-1][0] == minute:
            self.history[-1][1] += added
        else:
            self.history.append([minute, added])

    def rate(self, now: float) -> float:
        """Files (done or failed) per second over the last minute."""
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, snap: Snapshot, now: float) -> float | None:
        """Seconds until what is queued and in flight is through at the recent rate."""
        left, rate = snap.settling + snap.ready + snap.in_flight, self.rate(now)
        return round(left / rate, 1) if left and rate > 0 else None

    def status_text(self, snap: Snapshot, now: float) -> str:
        text = (
            f"{snap.done} done, {snap.failed} failed, {snap.settling + snap.ready} queued, "
            f"{snap.in_flight} in flight, {self.rate(now):.1f} files/s"
        )
        if snap.waiting is not None:
            text = f"{text}; waiting for {snap.waiting}"
        return text if snap.problem is None else f"{text}; unhealthy: {snap.problem}"

    # -- status.json -----------------------------------------------------------------------

    def write_status(self, snap: Snapshot, now: float) -> None:
        if self.status_path is None:
            return
        data: dict[str, Any] = {
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "uptime": round(now - self.started_mono, 1),
            "queue": snap.settling + snap.ready,
            "rate": round(self.rate(now), 3),
            "eta": self.eta(snap, now),
            "history": list(self.history),
            **asdict(snap),
            "sandbox": self.sandbox,
        }
        tmp = self.status_path.with_name(STATUS_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(data) + "\n")
            os.replace(tmp, self.status_path)
        except OSError as e:
            log.debug("cannot write %s: %s", self.status_path, e)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The live figures a running daemon last wrote, or None."""
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
