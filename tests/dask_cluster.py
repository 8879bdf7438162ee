"""A real Dask LocalCluster on 127.0.0.1 in a process of its own, for the tests and the bench.

    python -m tests.dask_cluster INFO_FILE [--workers 2] [--memory-limit 300MB]
                                           [--allowed-failures N]

starts a scheduler and worker processes (one thread each), writes INFO_FILE as JSON (the
scheduler's address and each worker's pid) and runs until SIGTERM or SIGINT. A scheduler plugin
measures from the scheduler's side, for each daemon run, how many render tasks it sent and the
most it held at once that had not finished yet: INFO_FILE + ".probe", {run: {"most", "seen"}}.

In a process of its own because Dask leaves threads behind in whatever process ran a client
(the tests fail on leaked threads), and so that `kill -9` of a worker is a real one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

TASK_PREFIX = "thumbd-render-"
UNFINISHED = {"released", "waiting", "no-worker", "queued", "processing"}


class InFlightProbe(SchedulerPlugin):
    """Per daemon run (the second part of a render task's key): how many render tasks it sent,
    and the most the scheduler held at once that had not finished (memory, erred) or gone."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.unfinished: dict[str, set[str]] = {}
        self.ended: set[str] = set()
        self.runs: dict[str, dict[str, int]] = {}

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if not isinstance(key, str) or not key.startswith(TASK_PREFIX) or key in self.ended:
            return
        run = key[len(TASK_PREFIX) :].split("-")[0]
        unfinished = self.unfinished.setdefault(run, set())
        figures = self.runs.setdefault(run, {"most": 0, "seen": 0})
        if finish in UNFINISHED:
            figures["seen"] += key not in unfinished
            unfinished.add(key)
        else:
            unfinished.discard(key)
            self.ended.add(key)
        figures["most"] = max(figures["most"], len(unfinished))
        self._write()

    def _write(self) -> None:
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.runs, f)
        os.replace(tmp, self.out)


def worker_pids(client: Client) -> dict[str, int]:
    return dict(client.run(os.getpid))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("info", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="auto")
    parser.add_argument("--allowed-failures", type=int, default=3)
    args = parser.parse_args()
    dask.config.set({"distributed.scheduler.allowed-failures": args.allowed_failures})
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            memory_limit=args.memory_limit,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # no fixed port: runs side by side
            worker_dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(InFlightProbe(str(args.info) + ".probe"))
        info = {"address": cluster.scheduler_address, "workers": worker_pids(client)}
        tmp = args.info.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, args.info)
        stop.wait()


if __name__ == "__main__":
    main()
