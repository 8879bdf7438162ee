"""Render on a Dask cluster: a `concurrent.futures.Executor` in front of a `distributed.Client`.

Imported only when `[executor] kind = "dask"`, so the local default needs no Dask at all. The
daemon sees what the local pool gives it: `submit(render, path, spec)` returns a future of a
`RenderResult`; a crash is `WorkerCrashed`; nothing else changes. The daemon still does every
write and every state change, so crash safety and idempotence are exactly the local ones.

How a source travels. Workers may be on machines that do not mount the watched folder, so this
executor reads the file here (`read_source`), moves the bytes straight to a worker with
`Client.scatter(direct=True)` (Dask's way to move data: large task arguments would go through
the scheduler and bloat its graph), and runs `render_bytes` there; the thumbnails' bytes come
back. With `shared_storage = true` every machine mounts the same folders and the task is plain
`render(path, spec)`: only the path travels. A worker that cannot open a file this machine can
(the folder is not mounted there, or not at the same path, or not for its user) would fail it
for a reason that is not true; that file is shipped instead, and the worker named in the log.

Failures, and why each is handled where it is:
- Scattered data has no recipe: when its worker dies, Dask cannot recompute it and cancels the
  task that needed it. The source is still on disk, so this executor reads and ships it again,
  up to `retries` times; past that the task counts as a crash (`WorkerCrashed`, "worker
  crashed") and the daemon's crash policy applies as it does locally.
- A worker dying while it runs a task whose input lives elsewhere: Dask re-runs the task itself
  and gives up with `KilledWorker` (the scheduler's `allowed-failures`): `WorkerCrashed` too.
- An exception inside the task is retried by Dask (`client.submit(retries=...)`).
- A task running longer than `[resize] timeout` (a hung decoder): counted from when the task
  says it started (an event from its worker, so not while it waits in a queue), it is cancelled,
  the file fails "timed out after N s" as locally, and its worker is restarted through its nanny:
  Python cannot stop a thread stuck in a decoder, and every task Dask queued behind it would
  wait forever. Other tasks that worker held are sent again like those of a worker that died.
- The scheduler going away cancels every task of the client. Those tasks are not failed: they
  wait here, a new client connects when the scheduler is back, and they are sent again. The
  daemon keeps at most `max_in_flight` jobs here, so the rest of the backlog stays on disk.

Threads: one thread ("dask") runs an asyncio loop with an asynchronous Client; every task is a
coroutine on it (read, scatter, submit, await the result), so many round trips overlap. Sources
are read in asyncio's worker threads; Dask's callback thread only wakes a coroutine. The
daemon's thread only hands tasks over with `call_soon_threadsafe`.

Beside this module: dask_watch.py, when each task started and what ends one past its timeout;
dask_report.py, what is logged while the cluster takes no work, and Dask's errors in a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Client, KilledWorker
from distributed.client import FutureCancelledError

from thumbd.config import ExecutorConfig
from thumbd.executors.base import WorkerCrashed
from thumbd.executors.dask_report import Outage, brief, killed
from thumbd.executors.dask_watch import Watches, fetch_result, time_out
from thumbd.executors.worker import STARTED_TOPIC, render_bytes_on_cluster, render_on_cluster
from thumbd.render.pipeline import read_source, render
from thumbd.render.spec import RenderResult, RenderSpec, Signature

log = logging.getLogger("thumbd.dask")

CONNECT_TIMEOUT = 5.0  # seconds for one attempt to reach the scheduler (and for a scatter)
RETRY_DELAY = 1.0  # seconds between attempts while the cluster cannot take work
CONNECTION_LOST = "scheduler-connection-lost"  # Dask's reason for cancelling on a lost client
TASK_PREFIX = "thumbd-render-"  # keys: thumbd-render-<daemon run>-<task> (dashboard, tests)


@dataclass(eq=False, slots=True)
class _Task:
    future: Future[RenderResult]
    path: str
    spec: RenderSpec
    urgent: bool = False  # a new file: Dask runs it ahead of the queued backlog (priority)
    lost: int = 0  # times its worker died with its data, so it had to be shipped again
    ship: bool = False  # send its bytes even with shared storage (a worker could not open it)
    worker: str = ""  # the Dask worker its last attempt ran on, when it said so


class _Requeue(Exception):
    """The cluster could not take or finish this task now; send it again later."""


class DaskExecutor(Executor):
    """Runs thumbd's render() on a Dask cluster; see the module docstring."""

    def __init__(self, settings: ExecutorConfig, timeout: float) -> None:
        self._settings = settings
        self._timeout = timeout  # [resize] timeout, for one task from when it starts running
        self._where = str(settings.scheduler_file or settings.address)
        self._lock, self._closed = threading.Lock(), False  # closed: submit() refuses
        # Owned by the loop thread:
        self._pending: deque[_Task] = deque()  # to send: new, or back after a failure
        self._running: dict[_Task, asyncio.Task[None]] = {}
        self._watches = Watches()  # the tasks on the cluster, for the timeout
        self._blind: set[str] = set()  # workers that could not open a file on shared storage
        self._stopping = False
        self._cancel_unsent = False
        self._outage = Outage(self._where)
        self._hold_until = 0.0
        self._announced = False
        self._keys = f"{TASK_PREFIX}{uuid.uuid4().hex[:8]}-"  # this run's tasks
        self.restarts = 0  # tasks whose worker died under them (the daemon's pool figure)
        self._first_try = threading.Event()  # the first attempt to connect has ended
        self._first_error: str | None = None
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, args=(started,), name="dask", daemon=True
        )
        self._thread.start()
        started.wait()

    # -- the Executor interface (any thread) -------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if fn is not render or kwargs or len(args) != 2:
            raise TypeError("DaskExecutor runs render(path, spec) only (render/pipeline.py)")
        return self.submit_render(*args)

    def submit_render(
        self, path: str, spec: RenderSpec, *, urgent: bool = False
    ) -> Future[RenderResult]:
        future: Future[RenderResult] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit after shutdown")
            self._loop.call_soon_threadsafe(self._accept, _Task(future, path, spec, urgent))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; tasks on the cluster go on, unsent ones may end cancelled."""
        self._call(self._stop, cancel_futures)
        if wait:
            self._thread.join()

    def terminate(self) -> None:
        """Stop now: what is still on the cluster ends cancelled (the drain timed out)."""
        self._call(self._stop, True, True)
        self._thread.join()

    def alive(self) -> bool:
        """Its thread runs (until shutdown, when the last task is done)."""
        return self._thread.is_alive()

    def waiting(self) -> str | None:
        """Why the cluster takes no work now and since when, for `thumbd status` (any thread)."""
        return self._outage.waiting()

    def unreachable(self, timeout: float) -> str | None:
        """Why the first attempt to reach the scheduler failed, or None if it worked (for
        `thumbd once`, which should not wait for a scheduler that may never come)."""
        if not self._first_try.wait(timeout):
            return f"Dask scheduler {self._where}: no answer within {timeout:g} s"
        return self._first_error

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._closed = True
            if self._thread.is_alive():
                with contextlib.suppress(RuntimeError):  # the loop has just ended
                    self._loop.call_soon_threadsafe(fn, *args)

    # -- the loop thread ---------------------------------------------------------------------

    def _thread_main(self, started: threading.Event) -> None:
        try:
            asyncio.run(self._main(started))
        except BaseException as e:  # a bug here: say so, and do not leave the daemon waiting
            log.critical("the Dask executor stopped: %r", e, exc_info=e)
            with self._lock:
                self._closed = True
            for task in [*self._pending, *self._running]:
                with contextlib.suppress(Exception):
                    task.future.set_exception(RuntimeError(f"the Dask executor stopped: {e!r}"))
        finally:
            started.set()
            self._first_try.set()

    async def _main(self, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        started.set()
        while not self._finished():
            client = await self._connect()
            if client is None:
                continue
            try:
                await self._serve(client)
            finally:
                with contextlib.suppress(Exception):
                    await client.close(timeout=CONNECT_TIMEOUT)

    def _accept(self, task: _Task) -> None:
        # A new file goes first among those waiting for the cluster to take work again.
        (self._pending.appendleft if task.urgent else self._pending.append)(task)
        self._wakeup.set()

    def _stop(self, cancel_unsent: bool, terminate: bool = False) -> None:
        self._stopping = True
        self._cancel_unsent = self._cancel_unsent or cancel_unsent
        self._drop_unsent()
        if terminate:
            for running in self._running.values():
                running.cancel()
        self._wakeup.set()

    def _drop_unsent(self) -> None:
        if self._cancel_unsent:
            while self._pending:
                _cancel(self._pending.popleft())

    def _finished(self) -> bool:
        return self._stopping and not self._pending and not self._running

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once for new work or a shutdown."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    async def _connect(self) -> Any:
        """A connected client, or None (after a pause) when the scheduler cannot be reached."""
        client = None
        try:
            client = Client(
                self._address(),
                asynchronous=True,
                timeout=CONNECT_TIMEOUT,
                set_as_default=False,
                direct_to_workers=not self._settings.shared_storage,
            )
            await client  # connects
        except Exception as e:
            if client is not None:  # closed here, not by its __del__ once this loop is gone
                with contextlib.suppress(Exception):
                    await client.close(timeout=CONNECT_TIMEOUT)
            if not self._first_try.is_set():
                self._first_error = f"cannot reach the Dask scheduler {self._where}: {brief(e)}"
                self._first_try.set()
            self._trouble(f"cannot connect ({brief(e)})")
            await self._pause(RETRY_DELAY)
            return None
        self._first_try.set()
        client.subscribe_topic(STARTED_TOPIC, self._watches.on_started)
        if not self._announced:
            self._announced = True
            log.info(
                "rendering on the Dask cluster at %s (%s, at most %d in flight, keys %s*)",
                self._where,
                "shared storage" if self._settings.shared_storage else "sources shipped",
                self._settings.max_in_flight,
                self._keys,
            )
        if not self._pending and not self._running:
            self._recovered()  # nothing waits: back as far as anyone can tell
        return client

    def _address(self) -> str:
        """The scheduler's address, read from the scheduler file on every attempt: a scheduler
        restarted on another port rewrites it."""
        if self._settings.scheduler_file is None:
            return self._settings.address
        path = Path(self._settings.scheduler_file)
        try:
            return str(json.loads(path.read_text())["address"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConnectionError(f"cannot read scheduler file {path}: {brief(e)}") from e

    async def _serve(self, client: Any) -> None:
        """Start a coroutine per task while the client is connected. Return when everything
        is finished, or when the client gave up on the scheduler (then a new one connects)."""
        while not self._finished() and client.status not in ("closing", "closed"):
            if client.status != "running":
                # Dask reconnects by itself for CONNECT_TIMEOUT seconds, then closes the
                # client. The tasks it cancelled come back to _pending meanwhile.
                self._trouble("lost the connection to the scheduler")
            elif time.monotonic() >= self._hold_until:
                while self._pending:
                    task = self._pending.popleft()
                    self._running[task] = asyncio.create_task(self._run(client, task))
            await self._pause(RETRY_DELAY)
        while self._running:  # a closed client's tasks fail at once: let them requeue
            await asyncio.wait(list(self._running.values()))

    # -- one task ----------------------------------------------------------------------------

    async def _run(self, client: Any, task: _Task) -> None:
        try:
            if not task.future.running() and not task.future.set_running_or_notify_cancel():
                return  # cancelled before it was sent
            result = await self._render(client, task)
        except _Requeue as e:
            self._requeue(task, str(e))
        except asyncio.CancelledError:
            _cancel(task)  # terminated: the source stays pending
        except BaseException as e:
            task.future.set_exception(e)
        else:
            self._recovered()
            task.future.set_result(result)
        finally:
            del self._running[task]
            self._wakeup.set()

    async def _render(self, client: Any, task: _Task) -> RenderResult:
        handles: list[Any] = []
        try:
            return await self._attempt(client, task, handles)
        finally:
            # Released before the daemon hears of the result: the scheduler never holds more
            # render tasks than the daemon has in flight.
            for handle in handles:
                with contextlib.suppress(Exception):
                    handle.release()

    async def _attempt(
        self,
        client: Any,
        task: _Task,
        handles: list[Any],
        source: tuple[Signature, bytes] | None = None,
    ) -> RenderResult:
        if source is None and (task.ship or not self._settings.shared_storage):
            read = await asyncio.to_thread(read_source, task.path)
            if isinstance(read, RenderResult):  # unreadable: the answer render() gives
                return read
            source = read
            del read
        try:
            work = await self._send(client, task, source, handles)
        except Exception as e:  # the scheduler or the worker went away, or no workers yet
            raise _Requeue(_lost(client) or f"cannot send work ({brief(e)})") from e
        shipped, source = source is not None, None  # no copy here while it renders
        try:
            result = await self._outcome(client, task, work)
        except (OSError, TimeoutError) as e:  # fetching the result failed
            if client.status != "running":
                raise _Requeue(_lost(client)) from e
            raise self._worker_lost(task, brief(e)) from e
        if shipped or result.signature is not None or result.error is None:
            return result
        # Shared storage, and the worker could not even open the file. If this machine cannot
        # either (deleted meanwhile, say), reading it here gives the answer render() gives;
        # else the worker does not see what this machine sees: send the bytes.
        read = await asyncio.to_thread(read_source, task.path)
        if isinstance(read, RenderResult):
            return read
        task.ship = True
        self._blind_worker(task, result.error)
        return await self._attempt(client, task, handles, read)

    async def _send(
        self, client: Any, task: _Task, source: tuple[Signature, bytes] | None, handles: list[Any]
    ) -> Any:
        key = f"{self._keys}{uuid.uuid4().hex}"
        self._watches.add(key)  # before it can start
        how = {"key": key, "retries": self._settings.retries, "priority": int(task.urgent)}
        if source is None:
            work = client.submit(render_on_cluster, task.path, task.spec, **how)
        else:
            try:
                scattered = await client.scatter(source[1], direct=True, hash=False)
            except BaseException:
                self._watches.forget(key)  # never submitted: _outcome, which drops it, never runs
                raise
            handles.append(scattered)
            name = os.path.basename(task.path)
            args = (scattered, task.spec, name, source[0])
            work = client.submit(render_bytes_on_cluster, *args, **how)
        handles.append(work)
        return work

    async def _outcome(self, client: Any, task: _Task, work: Any) -> RenderResult:
        try:
            worker = await self._watches.wait_done(work, self._timeout)
            if worker is not None:
                self.restarts += 1
                raise await time_out(client, task.path, work, worker, self._timeout)
            result: RenderResult = await fetch_result(work)
        except KilledWorker as e:
            self.restarts += 1
            raise WorkerCrashed(f"worker crashed ({killed(e)})") from None
        except FutureCancelledError as e:
            if e.reason == CONNECTION_LOST or client.status != "running":
                raise _Requeue(_lost(client) or "lost the connection") from None
            # Dask's only other cancel: the scattered bytes were lost with their worker.
            raise self._worker_lost(task, "its Dask worker died") from None
        finally:
            ran_on = self._watches.forget(work.key)
            if ran_on is not None:
                task.worker = ran_on
        return result

    def _blind_worker(self, task: _Task, error: str) -> None:
        if task.worker in self._blind:
            return
        self._blind.add(task.worker)
        log.warning(
            "Dask worker %s cannot open %s (%s), which this machine can: it does not see the "
            "watched folder at the same path, as [executor] shared_storage = true needs; "
            "sending the sources it cannot open as bytes instead",
            task.worker or "(unknown)",
            task.path,
            error,
        )

    def _worker_lost(self, task: _Task, why: str) -> Exception:
        """Send it again (a _Requeue to raise), or, past `retries`, call it a crash."""
        task.lost += 1
        self.restarts += 1
        if task.lost > self._settings.retries:
            times = "once" if task.lost == 1 else f"{task.lost} times"
            return WorkerCrashed(f"worker crashed (its Dask worker died {times})")
        log.warning("%s: %s; sending it again", task.path, why)
        return _Requeue("")

    def _requeue(self, task: _Task, why: str) -> None:
        self._pending.appendleft(task)
        if why:
            self._trouble(why)
            self._hold_until = time.monotonic() + RETRY_DELAY
        self._drop_unsent()

    # -- telling people ----------------------------------------------------------------------

    def _trouble(self, why: str) -> None:
        """The cluster cannot take work now: logged once, then every dask_report.LOG_EVERY s."""
        self._outage.trouble(why, len(self._pending) + len(self._running))

    def _recovered(self) -> None:
        self._outage.recovered(len(self._pending) + len(self._running))


def _lost(client: Any) -> str:
    return "" if client.status == "running" else "lost the connection to the scheduler"


def _cancel(task: _Task) -> None:
    if not task.future.cancel():  # already running: cancel() refuses
        with contextlib.suppress(Exception):
            task.future.set_exception(CancelledError())


__all__ = ["TASK_PREFIX", "DaskExecutor"]
