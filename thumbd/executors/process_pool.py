"""The resize executor: a process pool that recycles workers and survives their death.

Neither standard pool fits a daemon on Python 3.11. `ProcessPoolExecutor(max_tasks_per_child=N)`
deadlocks once more than N x workers tasks are queued (CPython gh-115634), and
`multiprocessing.Pool` hangs forever when a worker is killed (bpo-22393). So each worker here has
a pipe of its own, and the supervisor thread knows exactly which tasks a worker holds and which
one it is running (a worker runs them in the order they were sent, and answers in that order).
That gives exact answers to the questions a daemon has to answer:

- a worker exits after `max_tasks_per_child` tasks and a fresh one takes its place;
- a worker that dies (OOM killer, SIGKILL, a decoder crash) fails only the task it was running
  with `WorkerCrashed`; the tasks it held but had not started go back to the queue, and a fresh
  worker takes its place;
- a task over its `timeout` has its worker killed and fails with `TaskTimeout`.

Prefetch: besides the task it runs, each worker holds `prefetch` more in its pipe (default 1). A
worker that finishes one starts the next at once, instead of waiting for a round trip through
the supervisor thread, which needs the GIL that the daemon's main thread may be holding. A task
counts as started (its future running, its timeout ticking) only once the one before it has
answered; until then cancelling its future works, and its result is dropped.

Start method: forkserver. The daemon runs threads (the observer, downloaders, this supervisor),
and forking a threaded process copies locks in whatever state other threads left them. The fork
server is a clean single-threaded process started once; it preloads thumbd.warm (thumbd.render
and every Pillow plugin) so that each new worker is a cheap fork with nothing left to import.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import select
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

from thumbd.executors.base import TaskTimeout, WorkerCrashed

log = logging.getLogger("thumbd.executor")

PRELOAD = ["thumbd.executors.warm"]
_TICK = 1.0  # seconds: how often the supervisor looks at the clock while tasks run
# Signals the daemon handles, which its helper processes must leave to it (see _supervise).
_GROUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


class RemoteError(Exception):
    """The task raised an exception that could not be sent back as itself."""


@dataclass(slots=True)
class _Task:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    live: bool = True  # False: cancelled after it was handed over; the worker's answer is dropped


@dataclass(slots=True)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    tasks: deque[_Task] = field(default_factory=deque)  # handed over, in order; [0] is running
    started: float = 0.0  # when tasks[0] started, as far as the supervisor can tell
    sent: int = 0
    done: int = 0
    retiring: bool = False

    def running(self) -> bool:
        """Holds work whose answer someone still waits for."""
        return any(t.live and not t.future.cancelled() for t in self.tasks)


def _context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _worker_main(
    conn: Connection,
    max_tasks: int,
    initializer: Callable[..., None] | None,
    initargs: tuple[Any, ...],
    owner: int,
) -> None:
    # The daemon drains its workers itself: a Ctrl-C, a SIGTERM or a hang-up sent to the whole
    # process group must not kill a task half-way. The pipe's EOF ends a worker whose daemon is
    # gone. (SIGTERM and SIGHUP arrive ignored already: see ProcessPool._supervise.)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _end_with(owner)
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
        try:
            conn.send(reply)
        except OSError:  # the daemon is gone (kill -9): nobody wants the answer
            return


def _end_with(owner: int) -> None:
    """End this worker as soon as the daemon that owns it is gone, also in the middle of a
    task. An idle worker sees the pipe's EOF, but one stuck in a decode that never returns
    would otherwise outlive a daemon killed with SIGKILL (or ended by a second Ctrl-C) for
    ever, spinning, and keep the fork server and resource tracker alive with it. A pidfd
    (Linux 5.3) becomes readable when the daemon exits; a thread waits on it."""
    try:
        fd = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(1)  # gone already
    except (AttributeError, OSError):
        return  # no pidfd here: the pipe's EOF is all there is

    def watch() -> None:
        select.select([fd], [], [])
        os._exit(1)

    threading.Thread(target=watch, name="owner", daemon=True).start()


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
        prefetch: int = 1,
    ) -> None:
        self._ctx = _context()
        self._size = workers
        self._max_tasks = max_tasks_per_child
        self._in_hand = 1 + prefetch  # tasks a worker holds: the one it runs and the next ones
        self._timeout = timeout
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._pending: deque[_Task] = deque()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._shutdown = False
        self._cancel_in_hand = False
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
                self._cancel_in_hand = True  # the supervisor cancels what workers hold unstarted
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

    def kill_workers(self) -> None:
        """SIGKILL every worker, waiting for nothing: the daemon exits at once (a second
        SIGTERM). Safe in a signal handler: no lock (its holder may be the interrupted code)."""
        for w in list(self._workers):
            # ValueError: the supervisor thread closed that process object meanwhile (reaped).
            with contextlib.suppress(OSError, ValueError):
                if pid := w.process.pid:
                    os.kill(pid, signal.SIGKILL)

    def alive(self) -> bool:
        """The supervisor thread runs (until shutdown, when its last task is done)."""
        return self._thread.is_alive()

    def waiting(self) -> str | None:
        """What the pool waits for (never anything: its workers are its own)."""
        return None

    @property
    def busy(self) -> int:
        return self.held + len(self._pending)

    @property
    def held(self) -> int:
        """Tasks handed to workers: running, or waiting in a worker's pipe."""
        return sum(len(w.tasks) for w in list(self._workers))

    # -- the supervisor thread -------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"")

    def _supervise(self) -> None:
        # A SIGTERM or a hang-up sent to the daemon's whole process group (`kill -TERM -PGID`,
        # `timeout`, dumb-init, systemd's default KillMode=control-group, a terminal closing)
        # reaches its helper processes too. A dead fork server makes every worker look dead and
        # no new one can start; a dead resource tracker is started again with a warning that
        # resources might leak. So this thread, which starts them (and they inherit its signal
        # mask), blocks what the daemon handles itself; the fork server also ignores SIGTERM and
        # SIGHUP (thumbd.warm: the tracker unblocks SIGINT and SIGTERM when it starts, and
        # ignores those two itself). The helpers exit by themselves once the daemon is gone.
        signal.pthread_sigmask(signal.SIG_BLOCK, _GROUP_SIGNALS)
        try:
            while True:
                with self._lock:
                    cancel = self._cancel_in_hand
                if cancel:
                    self._cancel_unstarted()
                self._fill()
                with self._lock:
                    finished = self._shutdown and not self._pending
                if finished and not any(w.running() for w in self._workers):
                    break
                self._wait()
        finally:
            self._stop_workers()

    def _fill(self) -> None:
        """Keep `workers` processes alive, every idle one running a task, then each one holding
        as many more as it may (an idle worker goes first: prefetch must not starve it)."""
        while len(self._workers) < self._size and (self._pending or not self._shutdown):
            self._workers.append(self._spawn())
        for depth in range(1, self._in_hand + 1):
            for w in self._workers:
                while not w.retiring and len(w.tasks) < depth and w.sent < self._max_tasks:
                    with self._lock:
                        if not self._pending:
                            return
                        task = self._pending.popleft()
                    self._send(w, task)

    def _send(self, w: _Worker, task: _Task) -> None:
        if w.tasks:
            if task.future.cancelled():
                return  # waits behind a running task: it starts when that one answers
        elif not _start(task.future):
            return
        else:
            w.started = time.monotonic()
        w.tasks.append(task)
        w.sent += 1
        try:
            w.conn.send((task.fn, task.args))
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as e:
            w.tasks.pop()
            w.sent -= 1
            if isinstance(e, OSError):  # the worker is gone: let the sentinel path see it
                with self._lock:
                    self._pending.appendleft(task)
                w.retiring = True
            else:
                task.future.set_exception(e)

    def _start_next(self, w: _Worker) -> None:
        """The worker answered for tasks[0] and went straight on to the next one it holds."""
        if not w.tasks:
            return
        w.started = time.monotonic()
        head = w.tasks[0]
        if head.live and not _start(head.future):
            head.live = False  # cancelled while it waited in the pipe: it runs, for nothing

    def _cancel_unstarted(self) -> None:
        for w in self._workers:
            for task in list(w.tasks)[1:]:
                if task.live and task.future.cancel():
                    task.live = False

    def _requeue_unstarted(self, w: _Worker) -> None:
        """A worker is gone: what it held and had not started goes back to the queue."""
        unstarted = [t for t in w.tasks if t.live]
        w.tasks.clear()
        with self._lock:
            self._pending.extendleft(reversed(unstarted))

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main,
            args=(child, self._max_tasks, self._initializer, self._initargs, os.getpid()),
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
            if w.tasks:
                waitables.append(w.conn)
        deadline = self._next_deadline()
        slept = time.monotonic()
        ready = multiprocessing.connection.wait(
            waitables, timeout=None if deadline is None else min(deadline, _TICK)
        )
        if deadline is not None:
            self._not_counting(time.monotonic() - slept - _TICK)
        if self._wake_r in ready:
            while self._wake_r.poll():
                self._wake_r.recv_bytes()
        for w in list(self._workers):
            while w.tasks and w.conn in ready and w.conn.poll():
                if not self._receive(w):
                    break
        for w in list(self._workers):
            # The sentinel stays readable once the process is gone: no is_alive() poll (each is
            # one more selector built and torn down) on every wake-up.
            if w.process.sentinel in ready:
                self._reap(w)
        self._expire()

    def _not_counting(self, late: float) -> None:
        """Time the whole pool was stopped (Ctrl-Z, SIGSTOP to the process group, a frozen
        cgroup or container) does not count against a task's timeout: while tasks run, this
        thread wakes every _TICK, so a wake-up much later than that means it (and, as a rule,
        the workers) did not run. Without this, every file in flight when a stop longer than
        the timeout ends would be killed and recorded failed ("timed out")."""
        if late > _TICK:
            for w in self._workers:
                w.started += late

    def _next_deadline(self) -> float | None:
        if self._timeout is None:
            return None
        started = [w.started for w in self._workers if w.tasks]
        if not started:
            return None
        return max(0.0, min(started) + self._timeout - time.monotonic())

    def _receive(self, w: _Worker) -> bool:
        """Take one answer from the worker; False when it died while sending."""
        try:
            ok, value = w.conn.recv()
        except Exception:
            return False  # _reap reports it
        task = w.tasks.popleft()
        w.done += 1
        if w.done >= self._max_tasks:
            w.retiring = True  # it exits by itself now; _reap replaces it
        self._start_next(w)
        if not task.live:
            return True
        if ok:
            task.future.set_result(value)
        else:
            task.future.set_exception(value)
        return True

    def _reap(self, w: _Worker) -> None:
        w.process.join(timeout=5)
        if w.process.is_alive():
            return
        while w.tasks and w.conn.poll():  # answers it sent before it exited
            if not self._receive(w):
                break
        self._workers.remove(w)
        w.conn.close()
        if w.tasks:
            head = w.tasks.popleft()
            self.restarts += 1
            reason = _exit_reason(w.process.exitcode)
            log.warning("worker %s died (%s); replacing it", w.process.pid, reason)
            if head.live:
                head.future.set_exception(WorkerCrashed(f"worker crashed ({reason})"))
            self._requeue_unstarted(w)
        w.process.close()

    def _expire(self) -> None:
        if self._timeout is None:
            return
        now = time.monotonic()
        for w in list(self._workers):
            if w.tasks and now - w.started > self._timeout:
                head = w.tasks.popleft()
                log.warning("task over %.0f s; killing worker %s", self._timeout, w.process.pid)
                _kill(w.process)
                self.restarts += 1
                self._workers.remove(w)
                w.conn.close()
                if head.live:
                    head.future.set_exception(TaskTimeout(f"timed out after {self._timeout:g} s"))
                self._requeue_unstarted(w)

    def _stop_workers(self) -> None:
        for w in self._workers:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        for w in self._workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                _kill(w.process)
            for i, task in enumerate(w.tasks):
                if task.future.done():
                    continue
                if i == 0 and task.future.running():
                    task.future.set_exception(WorkerCrashed("worker stopped at shutdown"))
                else:
                    task.future.cancel()  # never started
            w.conn.close()
        self._workers.clear()
        with self._lock:
            while self._pending:
                self._pending.popleft().future.cancel()


def _start(future: Future[Any]) -> bool:
    """Mark the future running; False if it was cancelled. One already running is a task a
    worker died before it could take (its pipe broken): put back in the queue, it starts again."""
    return future.running() or future.set_running_or_notify_cancel()


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
