"""The local executor: renders in this machine's supervised process pool (process_pool.py).

Every worker confines itself first (executors/worker.py: memory cap, Pillow's pixel limit,
the sandbox: read-only incoming/, no writes, no TCP), each holds at most two tasks, and is
recycled after `max_tasks_per_child`. Each task is `worker.render_captured`: what its decoders
printed or warned comes back in its result. A new incoming/ needs new workers (factory.py).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future
from pathlib import Path

from thumbd.config import ResizeConfig
from thumbd.executors.process_pool import ProcessPool
from thumbd.render.spec import RenderResult, RenderSpec
from thumbd.text import plural

log = logging.getLogger("thumbd.executor")
_said_unconfined = False  # said at start-up, not again for every pool a reload makes

# Past the pool's own timeouts, how long a pool with work and no result may stay quiet.
STALL_GRACE = 30.0


class LocalPool:
    """The `Pool` of `[executor] kind = "local"`."""

    def __init__(self, resize: ResizeConfig, incoming: Path | None = None) -> None:
        """`incoming`: the folder the sources are in, the one folder its workers may read (the
        code aside); None: not confined (tests of the pool alone)."""
        from thumbd.executors.worker import init_worker  # Pillow, for the workers only

        readable = () if incoming is None else (os.path.realpath(incoming),)
        if readable:
            _say_if_unconfined()
        self._size = resize.workers
        self._timeout = resize.timeout
        self._pool = ProcessPool(
            resize.workers,
            max_tasks_per_child=resize.max_tasks_per_child,
            timeout=resize.timeout,
            initializer=init_worker,
            initargs=(resize.max_memory_mb * 2**20, resize.max_pixels, readable),
        )

    def render(self, path: str, spec: RenderSpec, *, urgent: bool = False) -> Future[RenderResult]:
        # Nothing waits here to overtake: the dispatcher keeps the backlog (two per worker).
        from thumbd.executors.worker import render_captured  # pickled by reference

        return self._pool.submit(render_captured, path, spec)

    def capacity(self) -> int:
        return self._size * 2  # every worker busy plus one task each in hand

    def describe(self) -> str:
        return plural(self._size, "worker")

    def workers(self) -> int:
        return self._size

    def restarts(self) -> int:
        return self._pool.restarts

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait, cancel_futures=cancel_futures)

    def terminate(self) -> None:
        self._pool.terminate()

    def kill(self) -> None:
        self._pool.kill_workers()

    def alive(self) -> bool:
        return self._pool.alive()

    def waiting(self) -> str | None:
        return None  # its workers are its own: it never waits for anyone

    def stuck(self, quiet: float) -> str | None:
        # Every task ends within `timeout` (its worker is killed then), and at most two per
        # worker are handed over: no result for twice that means the pool is stuck.
        if quiet > 2 * self._timeout + STALL_GRACE:
            return f"no result from the worker pool for {quiet:.0f} s"
        return None


def _say_if_unconfined() -> None:
    """One warning when the kernel cannot confine the workers (fully)."""
    global _said_unconfined
    from thumbd.executors import sandbox

    found = sandbox.status()
    if found.abi < 4 and not _said_unconfined:
        _said_unconfined = True
        if found.on:
            what = "decoders may still open network connections (Landlock network rules: Linux 6.7)"
        else:
            what = "decoders run with this user's full access (Landlock: Linux 5.13)"
        log.warning("worker sandbox %s: %s", found.describe(), what)
