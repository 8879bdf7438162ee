"""The resize executor: a process pool that recycles workers and survives their death.

Neither standard pool fits a daemon on Python 3.11. `ProcessPoolExecutor(max_tasks_per_child=N)`
deadlocks once more than N x workers tasks are queued (CPython gh-115634), and
`multiprocessing.Pool` hangs forever when a worker is killed (bpo-22393). So each worker here has
a pipe of its own and holds at most one task; the supervisor thread always knows which task a
worker holds. That gives exact answers to the questions a daemon has to answer:

- a worker exits after `max_tasks_per_child` tasks and a fresh one takes its place;
- a worker that dies (OOM killer, SIGKILL, a decoder crash) fails only its own task with
  `WorkerCrashed`, and a fresh worker takes its place;
- a task over its `timeout` has its worker killed and fails with `TaskTimeout`.

Start method: forkserver. The daemon runs threads (the observer, downloaders, this supervisor),
and forking a threaded process copies locks in whatever state other threads left them. The fork
server is a clean single-threaded process started once; it preloads thumbd.render so that each
new worker is a cheap fork with Pillow already imported.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import pickle
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import Any

log = logging.getLogger("thumbd.executor")

PRELOAD = ["thumbd.render"]


class WorkerCrashed(Exception):
    """The worker process running the task died (killed, out of memory, crashed)."""


class TaskTimeout(Exception):
    """The task ran longer than the pool's timeout; its worker was killed."""


class RemoteError(Exception):
    """The task raised an exception that could not be sent back as itself."""


@dataclass(slots=True)
class _Task:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(slots=True)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    task: _Task | None = None
    started: float = 0.0
    done: int = 0
    retiring: bool = field(default=False)


def _context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _worker_main(
    conn: Connection,
    max_tasks: int,
    initializer: Callable[..., None] | None,
    initargs: tuple[Any, ...],
) -> None:
    # The daemon drains its workers itself: a Ctrl-C or a SIGTERM sent to the whole process
    # group must not kill a task half-way. The pipe's EOF ends a worker whose daemon is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
    for _ in range(max_tasks):
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        fn, args = message
        try:
            reply: tuple[bool, Any] = (True, fn(*args))
        except BaseException as e:
            reply = (False, _portable(e))
        conn.send(reply)


def _portable(e: BaseException) -> BaseException:
    try:
        pickle.dumps(e)
    except Exception:
        return RemoteError("".join(traceback.format_exception(e)))
    return e


class ProcessPool(Executor):
    """A `concurrent.futures.Executor` over recycled, supervised worker processes."""

    def __init__(
        self,
        workers: int,
        *,
        max_tasks_per_child: int = 100,
        timeout: float | None = None,
        initializer: Callable[..., None] | None = None,
        initargs: Sequence[Any] = (),
    ) -> None:
        self._ctx = _context()
        self._size = workers
        self._max_tasks = max_tasks_per_child
        self._timeout = timeout
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._pending: deque[_Task] = deque()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._shutdown = False
        self.restarts = 0  # workers replaced after a crash or a timeout
        self._thread = threading.Thread(target=self._supervise, name="pool", daemon=True)
        self._thread.start()

    # -- the Executor interface ------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if kwargs:
            raise TypeError("ProcessPool.submit takes positional arguments only")
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._pending.append(_Task(future, fn, args))
        self._wake()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft().future.cancel()
        self._wake()
        if wait:
            self._thread.join()

    def terminate(self) -> None:
        """Stop now: kill every worker and fail what they held (the drain timed out)."""
        self.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            _kill(w.process)
        self._thread.join()

    def alive(self) -> bool:
        """The supervisor thread runs (until shutdown, when its last task is done)."""
        return self._thread.is_alive()

    @property
    def busy(self) -> int:
        return sum(1 for w in self._workers if w.task is not None) + len(self._pending)

    # -- the supervisor thread -------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"")

    def _supervise(self) -> None:
        try:
            while True:
                self._fill()
                with self._lock:
                    finished = self._shutdown and not self._pending
                if finished and all(w.task is None for w in self._workers):
                    break
                self._wait()
        finally:
            self._stop_workers()

    def _fill(self) -> None:
        """Keep `workers` processes alive and hand each idle one a task."""
        while len(self._workers) < self._size and (self._pending or not self._shutdown):
            self._workers.append(self._spawn())
        for w in self._workers:
            if w.task is not None or w.retiring:
                continue
            with self._lock:
                if not self._pending:
                    return
                task = self._pending.popleft()
            if not task.future.set_running_or_notify_cancel():
                continue
            self._send(w, task)

    def _send(self, w: _Worker, task: _Task) -> None:
        w.task, w.started = task, time.monotonic()
        try:
            w.conn.send((task.fn, task.args))
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as e:
            w.task = None
            if isinstance(e, OSError):  # the worker is gone: let the sentinel path see it
                with self._lock:
                    self._pending.appendleft(task)
                w.retiring = True
            else:
                task.future.set_exception(e)

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main,
            args=(child, self._max_tasks, self._initializer, self._initargs),
            name="thumbd-worker",
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    def _wait(self) -> None:
        waitables: list[Any] = [self._wake_r]
        for w in self._workers:
            waitables.append(w.process.sentinel)
            if w.task is not None:
                waitables.append(w.conn)
        ready = multiprocessing.connection.wait(waitables, timeout=self._next_deadline())
        if self._wake_r in ready:
            while self._wake_r.poll():
                self._wake_r.recv_bytes()
        for w in list(self._workers):
            if w.task is not None and w.conn in ready:
                self._receive(w)
        for w in list(self._workers):
            if w.process.sentinel in ready or not w.process.is_alive():
                self._reap(w)
        self._expire()

    def _next_deadline(self) -> float | None:
        if self._timeout is None:
            return None
        started = [w.started for w in self._workers if w.task is not None]
        if not started:
            return None
        return max(0.0, min(started) + self._timeout - time.monotonic())

    def _receive(self, w: _Worker) -> None:
        try:
            ok, value = w.conn.recv()
        except Exception:
            return  # it died while sending; _reap reports it
        task, w.task = w.task, None
        w.done += 1
        if w.done >= self._max_tasks:
            w.retiring = True  # it exits by itself now; _reap replaces it
        assert task is not None
        if ok:
            task.future.set_result(value)
        else:
            task.future.set_exception(value)

    def _reap(self, w: _Worker) -> None:
        w.process.join(timeout=5)
        if w.process.is_alive():
            return
        self._workers.remove(w)
        w.conn.close()
        if w.task is not None:
            self.restarts += 1
            reason = _exit_reason(w.process.exitcode)
            log.warning("worker %s died (%s); replacing it", w.process.pid, reason)
            w.task.future.set_exception(WorkerCrashed(f"worker crashed ({reason})"))
        w.process.close()

    def _expire(self) -> None:
        if self._timeout is None:
            return
        now = time.monotonic()
        for w in list(self._workers):
            if w.task is not None and now - w.started > self._timeout:
                task, w.task = w.task, None
                log.warning("task over %.0f s; killing worker %s", self._timeout, w.process.pid)
                _kill(w.process)
                self.restarts += 1
                self._workers.remove(w)
                w.conn.close()
                task.future.set_exception(TaskTimeout(f"timed out after {self._timeout:g} s"))

    def _stop_workers(self) -> None:
        for w in self._workers:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        for w in self._workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                _kill(w.process)
            if w.task is not None and not w.task.future.done():
                w.task.future.set_exception(WorkerCrashed("worker stopped at shutdown"))
            w.conn.close()
        self._workers.clear()
        with self._lock:
            while self._pending:
                self._pending.popleft().future.cancel()


def _kill(process: multiprocessing.process.BaseProcess) -> None:
    try:
        process.kill()
        process.join(timeout=5)
    except (OSError, ValueError):
        pass


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def set_memory_limit(max_bytes: int) -> None:
    """Worker initializer: cap the address space so that one hostile image fails alone."""
    import resource

    if max_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


__all__ = ["ProcessPool", "RemoteError", "TaskTimeout", "WorkerCrashed", "set_memory_limit"]
