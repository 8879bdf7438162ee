"""Memory of a process tree, sampled from /proc while a benchmark runs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """pid and every process below it (through /proc/PID/task/TID/children)."""
    found = [pid]
    i = 0
    while i < len(found):
        found.extend(_children(found[i]))
        i += 1
    return found


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return kids


def rss(pid: int) -> int:
    """Resident set size in bytes (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy (not idle or waiting for I/O)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICK


def pss(pid: int) -> int:
    """Proportional set size in bytes: shared pages divided among their users."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class Sample:
    t: float
    main: int  # RSS of the root process
    tree: int  # RSS summed over the root and every descendant
    tree_pss: int
    processes: int


@dataclass
class Monitor:
    """Samples a process tree every `interval` seconds on a thread until stopped."""

    pid: int
    interval: float = 0.1
    samples: list[Sample] = field(default_factory=list)
    cpu: dict[int, float] = field(default_factory=dict)  # last CPU seconds seen, per process
    machine_busy: float = 0.0  # CPU seconds the whole machine was busy while monitored
    first: dict[int, float] = field(default_factory=dict)  # CPU seconds at the first sample
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="procmon", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        t0 = time.monotonic()
        busy0 = machine_busy_seconds()
        while not self._stop.is_set():
            self.sample(time.monotonic() - t0)
            self._stop.wait(self.interval)
        self.sample(time.monotonic() - t0)
        self.machine_busy = machine_busy_seconds() - busy0

    def sample(self, t: float) -> None:
        pids = descendants(self.pid)
        for p in pids:
            seconds = cpu_seconds(p)
            if seconds:
                self.cpu[p] = seconds
        if not self.samples:
            self.first = dict(self.cpu)
        self.samples.append(
            Sample(
                t=t,
                main=rss(self.pid),
                tree=sum(rss(p) for p in pids),
                tree_pss=sum(pss(p) for p in pids),
                processes=len(pids),
            )
        )

    def cpu_used(self) -> tuple[float, float]:
        """CPU seconds used by (the root process, the whole tree) while monitored. A worker
        that exits between two samples loses at most one interval of its time."""
        since = self.first
        total = sum(v - since.get(p, 0.0) for p, v in self.cpu.items())
        return self.cpu.get(self.pid, 0.0) - since.get(self.pid, 0.0), total

    def peak(self) -> dict[str, float]:
        if not self.samples:
            return {"peak_rss_mb": 0.0, "peak_main_rss_mb": 0.0, "peak_pss_mb": 0.0}
        return {
            "peak_rss_mb": max(s.tree for s in self.samples) / 1e6,
            "peak_main_rss_mb": max(s.main for s in self.samples) / 1e6,
            "peak_pss_mb": max(s.tree_pss for s in self.samples) / 1e6,
        }


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores the whole machine kept busy over the next `seconds`."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds


def wait_for_quiet(threshold: float, max_wait: float, say: Callable[[str], None]) -> float:
    """Wait (up to max_wait s) until other work keeps under `threshold` cores busy for 3 s in a
    row, so that a timed part does not share the machine; return the load it last saw."""
    deadline = time.monotonic() + max_wait
    calm = 0
    load = busy_cores()
    told = False
    while time.monotonic() < deadline:
        calm = calm + 1 if load < threshold else 0
        if calm >= 3:
            return load
        if not told and load >= threshold:
            say(f"the machine is busy ({load:.1f} cores); waiting up to {max_wait:.0f} s for quiet")
            told = True
        load = busy_cores()
    say(f"still {load:.1f} cores busy with other work; measuring anyway (see other_load)")
    return load
