"""The monitor's bookkeeping: what is due, the rate over the last minute, the status file."""

from __future__ import annotations

import math
from pathlib import Path

from thumbd.service.monitor import Monitor, Snapshot, read_status
from thumbd.service.notify import Notifier


def snap(done: int, problem: str | None = None) -> Snapshot:
    return Snapshot(
        settling=2,
        ready=3,
        in_flight=1,
        done=done,
        failed=1,
        bytes_in=10,
        bytes_out=5,
        workers=2,
        pool_restarts=0,
        problem=problem,
        finished=done + 1,
    )


def test_nothing_is_ever_due_without_a_status_file_or_systemd() -> None:
    # `thumbd once`: the main loop must not wake for the monitor at all.
    assert Monitor(Notifier(None), None).due() == math.inf


def test_rate_status_text_and_status_file(tmp_path: Path) -> None:
    m = Monitor(Notifier(None), tmp_path)
    m.tick(100.0, snap(0))
    assert m.due() == 100.0 + 2.0
    m.tick(102.0, snap(10))
    assert m.rate(102.0) == 5.0
    for t in range(104, 200, 2):  # samples older than a minute drop out
        m.tick(float(t), snap(10))
    assert m.rate(198.0) == 0.0
    assert m.status_text(snap(10, "the observer thread is dead"), 198.0) == (
        "10 done, 1 failed, 5 queued, 1 in flight, 0.0 files/s; "
        "unhealthy: the observer thread is dead"
    )
    live = read_status(tmp_path)
    assert live is not None and live["queue"] == 5 and live["done"] == 10
    assert not list(tmp_path.glob("*.tmp"))
    m.close()
    assert read_status(tmp_path) is None
