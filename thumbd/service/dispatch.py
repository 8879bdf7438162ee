"""Dispatch: ready jobs handed to the pool, and the pool's outcomes routed back.

The pool gets no more than its `capacity()`: the rest waits here, in two lanes, where a
shutdown can simply leave it on disk. Files that arrive while thumbd runs (events) go ahead of
those a scan, a retry or a redo found, so a new photo gets its thumbnails within moments while
a backlog of any size is worked; every BACKLOG_SHARE-th hand-over goes to the backlog when both
lanes wait, so a steady trickle of new files cannot starve it.

An outcome is a value (executors/base.py): a result goes to the publisher; a crash is tried
once more, then failed; a timeout, an out-of-memory or a bug fails at once; a cancelled task
stays pending. Runs on the main loop
only; the pool's threads just post `Completed` to the inbox.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import replace

from thumbd.executors.base import Pool, outcome
from thumbd.executors.factory import PoolFactory, make_pool
from thumbd.output.publish import Publisher
from thumbd.render.spec import FailKind, Failure, RenderResult
from thumbd.service.messages import Completed, Job
from thumbd.service.shared import Shared
from thumbd.text import plural

log = logging.getLogger("thumbd")
said_log = logging.getLogger("thumbd.worker")  # what decoders printed, per source

BACKLOG_SHARE = 4  # while new files wait, one hand-over in this many still goes to the backlog
CRASH_ATTEMPTS = 2  # a source that kills its worker this many times is recorded as failed
# Failures of the task rather than of the file's content (outcome() gives them no signature).
_TASK_FAILURES = frozenset(
    {FailKind.CRASHED, FailKind.TIMEOUT, FailKind.OUT_OF_MEMORY, FailKind.INTERNAL}
)


class Dispatcher:
    """The pool (and pools a reload retired), and the jobs they hold."""

    def __init__(
        self, shared: Shared, publisher: Publisher, pool_factory: PoolFactory = make_pool
    ) -> None:
        self.shared = shared
        self.publisher = publisher
        self.pool_factory = pool_factory
        self.pool: Pool | None = None
        self.retired: list[Pool] = []  # replaced on reload, finishing their jobs
        self.retired_restarts = 0
        self.new: deque[Job] = deque()  # oldest first: events while running
        self.backlog: deque[Job] = deque()  # oldest first: scans, retries, redo
        self.queued: set[str] = set()  # the sources in either lane
        self.handed = 0  # hand-overs so far, for the backlog's share
        self.in_flight: dict[str, Job] = {}
        self.last_progress = time.monotonic()  # the last result, or when in_flight filled up

    def start(self) -> None:
        self.pool = self.pool_factory(self.shared.config, self.shared.once)

    def running(self, rel: str) -> bool:
        """In the pool now: its result decides what happens to it."""
        return rel in self.in_flight

    def holds(self, rel: str) -> bool:
        """Queued or in the pool: a new look waits until it is through."""
        return rel in self.in_flight or rel in self.queued

    def busy(self) -> bool:
        return bool(self.in_flight)

    def next_due(self) -> float | None:
        return None  # woken by results and by the stages that queue

    def ready(self) -> int:
        return len(self.new) + len(self.backlog)

    def enqueue(self, job: Job) -> None:
        (self.new if job.new else self.backlog).append(job)
        self.queued.add(job.rel)

    def drop_ready(self) -> int:
        """A drain: what waits to render stays on disk, pending. How many that was."""
        n = self.ready()
        self.new.clear()
        self.backlog.clear()
        self.queued.clear()
        return n

    def _next(self) -> Job:
        """New files first; the backlog gets every BACKLOG_SHARE-th turn while both wait."""
        self.handed += 1
        backlog_turn = self.handed % BACKLOG_SHARE == 0
        lane = self.backlog if (backlog_turn and self.backlog) or not self.new else self.new
        job = lane.popleft()
        self.queued.discard(job.rel)
        return job

    def pools(self) -> list[Pool]:
        return [p for p in (self.pool, *self.retired) if p is not None]

    def tick(self, now: float) -> None:
        """Hand over what the pool can take, unless outgoing/ is full (results would pile up
        in memory); retire pools a reload replaced once they are done."""
        self._retire_finished()
        if self.publisher.busy() or self.pool is None:
            return
        limit = self.pool.capacity()
        while (self.new or self.backlog) and len(self.in_flight) < limit:
            self._submit(self._next())

    def _submit(self, job: Job) -> None:
        assert self.pool is not None
        now = time.monotonic()
        if not self.in_flight:
            self.last_progress = now  # the pool's clock starts now
        job = replace(job, sent=now, settings=self.shared.settings)
        future = self.pool.render(job.path, self.shared.spec, urgent=job.new)
        self.in_flight[job.rel] = job
        future.add_done_callback(functools.partial(self._post, job))

    def _post(self, job: Job, future: Future[RenderResult]) -> None:
        self.shared.inbox.put(Completed(job, future))  # on the pool's thread: post, no more

    def on_completed(self, message: Completed) -> None:
        job = message.job
        self.in_flight.pop(job.rel, None)
        self.last_progress = time.monotonic()
        result = outcome(message.future)
        for line in () if result is None else result.said:  # a decoder's own words
            said_log.warning("%s: %s", job.rel, line, extra={"source": job.rel})
        failure = None if result is None else result.failure
        if result is None:
            self.shared.stats.dropped += 1  # shutting down: the source stays pending
        elif failure is not None and failure.kind is FailKind.CRASHED:
            self._on_crash(job, failure.reason)
        elif failure is not None and failure.kind in _TASK_FAILURES and not result.signature:
            self.publisher.fail(job, job.signature, failure)  # the task failed, not the file
        else:
            self.publisher.publish(job, result)

    def _on_crash(self, job: Job, reason: str) -> None:
        if self.shared.stopping:
            self.shared.stats.dropped += 1
            return  # stopped at shutdown: pending, not failed
        if job.attempt < CRASH_ATTEMPTS:
            log.warning("%s: %s; trying it once more", job.rel, reason)
            lane = self.new if job.new else self.backlog
            lane.appendleft(replace(job, attempt=job.attempt + 1))  # first in its lane
            self.queued.add(job.rel)
        else:
            self.publisher.fail(job, job.signature, Failure(FailKind.CRASHED, reason))

    # -- pools -----------------------------------------------------------------------------

    def replace_pool(self) -> None:
        """A new pool for new work; the old one finishes what it holds, then stops. Raises
        PoolUnavailable (and keeps the current one) if the new kind cannot be had."""
        new = self.pool_factory(self.shared.config, self.shared.once)
        if self.pool is not None:
            self.pool.shutdown(wait=False)
            self.retired.append(self.pool)
        self.pool = new

    def _retire_finished(self) -> None:
        for pool in [p for p in self.retired if not p.alive()]:
            pool.shutdown(wait=True)
            self.retired_restarts += pool.restarts()
            self.retired.remove(pool)

    def restarts(self) -> int:
        return self.retired_restarts + sum(p.restarts() for p in self.pools())

    def problem(self) -> str | None:
        """Why the pool cannot do its work right now, or None."""
        if self.pool is None:
            return None
        if not self.pool.alive():
            return "the worker pool's supervisor thread is dead"
        if not self.in_flight:
            return None
        return self.pool.stuck(time.monotonic() - self.last_progress)

    def stop_taking(self) -> None:
        for pool in self.pools():
            pool.shutdown(wait=False, cancel_futures=True)

    def terminate(self) -> None:
        log.warning(
            "%s still running after %.0f s; stopping them (they stay pending)",
            plural(len(self.in_flight), "job"),
            self.shared.config.daemon.shutdown_timeout,
        )
        for pool in self.pools():
            pool.terminate()

    def join(self) -> None:
        for pool in self.pools():
            pool.shutdown(wait=True, cancel_futures=True)

    def kill(self) -> None:
        """From the second signal's handler: no worker may outlive the daemon."""
        for pool in self.pools():
            pool.kill()
