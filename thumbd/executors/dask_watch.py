"""The hung-task timeout on a Dask cluster: when each task started, where, and what ends it.

`[resize] timeout` counts from when a task says it started (an event its worker logs on
STARTED_TOPIC, executors/worker.py), not from when it was submitted: a task waiting in a
worker's queue is not hung. `Watches` keeps one `Watch` per task key of this executor, set by
those events (Dask's event thread hands them to the loop) and by the task's done callback (Dask's
callback thread), and `wait_done` waits for one task without fetching anything. A task past its
timeout is cancelled and its worker restarted through its nanny (`time_out`): Python cannot stop
a thread stuck in a decoder, and every task Dask queued behind it would wait forever. A task
done is then fetched within RESULT_TIMEOUT (`fetch_result`), or sent again.

Everything here runs on the executor's loop thread, except where a comment says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from thumbd.executors.base import TaskTimeout
from thumbd.executors.dask_report import brief

log = logging.getLogger("thumbd.dask")

RESTART_TIMEOUT = 60.0  # seconds for a nanny to restart the worker of a task that timed out
RESULT_TIMEOUT = 15.0  # seconds to fetch a finished task's thumbnails before rendering it again


class Watch:
    """One task on the cluster, as this loop sees it: whether it is done, and since when (and on
    which worker) it runs. `wake` is set on every change."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.done = False
        self.started: float | None = None
        self.worker = ""


class Watches:
    """The `Watch` of every task of this executor on the cluster, by task key."""

    def __init__(self) -> None:
        self._by_key: dict[str, Watch] = {}

    def add(self, key: str) -> None:
        """Watch `key` (before it is submitted: it can start at once)."""
        self._by_key[key] = Watch()

    def forget(self, key: str) -> str | None:
        """Stop watching `key`; the worker it last ran on ("" unknown), None if not watched."""
        watch = self._by_key.pop(key, None)
        return None if watch is None else watch.worker

    def on_started(self, event: tuple[float, Any]) -> None:
        """A task of ours started on a worker (or started again, after a retry)."""
        _, msg = event
        watch = self._by_key.get(str(msg.get("key"))) if isinstance(msg, dict) else None
        if watch is not None:
            watch.started, watch.worker = time.monotonic(), str(msg.get("worker", ""))
            watch.wake.set()

    async def wait_done(self, work: Any, timeout: float) -> str | None:
        """Wait until the task is done (finished, erred or cancelled), without fetching anything;
        or until it has run for `timeout`: then return the worker that runs it."""
        watch, loop = self._by_key[work.key], asyncio.get_running_loop()
        work.add_done_callback(lambda _: loop.call_soon_threadsafe(_done, watch))  # Dask's thread
        while not watch.done:
            watch.wake.clear()
            if watch.started is None:
                await watch.wake.wait()
                continue
            left = watch.started + timeout - time.monotonic()
            if left <= 0:
                return watch.worker
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.wake.wait(), left)
        return None


def _done(watch: Watch) -> None:
    watch.done = True
    watch.wake.set()


async def fetch_result(work: Any) -> Any:
    """The result of a finished task. A worker killed just as it finished can hold the fetch
    for a long time (30 s in the tests); past RESULT_TIMEOUT this raises TimeoutError and the
    task is sent again. Shielded: concurrent fetches share Dask's gather, which must go on."""
    fetch = asyncio.ensure_future(work.result())
    fetch.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, not logged
    return await asyncio.wait_for(asyncio.shield(fetch), RESULT_TIMEOUT)


async def time_out(client: Any, path: str, work: Any, worker: str, timeout: float) -> TaskTimeout:
    """Give up on a task past `timeout`: cancel it and restart the worker stuck in it."""
    log.warning(
        "%s: task over %g s on Dask worker %s; restarting that worker",
        path,
        timeout,
        worker,
    )
    with contextlib.suppress(Exception):
        await client.cancel([work], force=True)
    try:
        outcome = await client.restart_workers(
            [worker], timeout=RESTART_TIMEOUT, raise_for_error=False
        )
        trouble = None if outcome.get(worker) in ("OK", "removed") else outcome.get(worker)
    except Exception as e:  # a worker without a nanny cannot be restarted
        trouble = brief(e)
    if trouble is not None:
        log.error(
            "cannot restart Dask worker %s (%s): the hung task holds it until it exits",
            worker,
            trouble,
        )
    return TaskTimeout(f"timed out after {timeout:g} s")
