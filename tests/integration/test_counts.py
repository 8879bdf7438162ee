"""This run's counts beside the totals, with the real daemon: a file failed and then done counts
as done, one deleted or cleared by `thumbd retry` no longer counts, whenever status is read."""

from __future__ import annotations

import json
import threading
from typing import Any

from tests.conftest import Daemon, thumbd
from tests.integration.test_core import jpeg_bytes
from tests.integration.test_service import drop


def test_this_runs_counts_agree_with_the_totals_at_every_moment(daemon: Daemon) -> None:
    # A file that fails and is then fixed counts once, as done; a failed file deleted, or one
    # `thumbd retry` cleared, no longer counts as failed in this run either.
    broken = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
    seen: list[dict[str, Any]] = []
    stop_watching = threading.Event()

    def watch() -> None:  # status, as often as it can be read, all along
        while not stop_watching.is_set():
            seen.append(daemon.status())

    daemon.start()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        drop(daemon, ["a.jpg", "b.jpg", "c.jpg"], broken)
        daemon.recorded(done=0, failed=3)
        drop(daemon, ["a.jpg"], jpeg_bytes())  # fixed: failed, then done
        daemon.recorded(done=1, failed=2)
        (daemon.incoming / "b.jpg").unlink()
        daemon.recorded(done=1, failed=1)
        r = thumbd("retry", "-c", str(daemon.config), "c.jpg")
        assert r.returncode == 0, r.stderr
        (daemon.incoming / "c.jpg").unlink()  # so that it does not fail again
        daemon.recorded(done=1, failed=0)
        daemon.idle()  # the daemon's own figures, in status.json, after all of that
    finally:
        stop_watching.set()
        watcher.join()
    last = daemon.status()
    assert (last["daemon"]["done"], last["daemon"]["failed"]) == (1, 0)
    live = json.loads((daemon.tmp / ".thumbd" / "status.json").read_text())
    assert (live["done"], live["failed"]) == (1, 0)
    assert len(seen) > 5
    for status in (s for s in seen if "done" in s["daemon"]):  # once it has live figures
        run = status["daemon"]
        # Every record is this run's: the run's counts are the totals, whenever read.
        assert (run["done"], run["failed"]) == (status["done"], status["failed"]), status
    assert daemon.stop() == 0
    assert "◆ 1 done ◆ 0 failed ◆" in daemon.read_log()
