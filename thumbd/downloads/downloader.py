"""The download stage's engine: one thread running an asyncio event loop, many URLs in flight.

`Downloader` owns a thread (`download`) with an event loop, one aiohttp session (client.py) and
a bounded executor (`download-io`) on which aiofiles writes, fsyncs, renames and getaddrinfo
run. The main loop hands it URLs (`submit`); it runs at most `concurrency` fetches at once, and
at most `max_per_host` to one host name: the `Scheduler` hands a URL out only while its host is
below its limit, hosts served round-robin, so a busy host never holds up another. A redirect
to another host trades the fetch's slot for one there, waiting for it on the loop.

Retries wait in the scheduler, not in a fetch: a retryable failure comes back after an
exponential backoff with jitter, or after the wait the server asked for (`Retry-After`, up to
MAX_RETRY_AFTER). Each final outcome goes back to the main loop as a `Fetched` message on its
inbox; a failure is a value with a reason, never an exception crossing threads. The loop never
touches the state: stage.Downloads, on the main loop, records what it posts. `cancel` cancels
every fetch in flight (each removes its temporary file and reports Cancelled: pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from thumbd.config import DownloadConfig
from thumbd.downloads.fetch import Fetcher, HostSlot, host_key
from thumbd.downloads.files import Destination
from thumbd.downloads.outcomes import Cancelled, Failure, Limits, Result
from thumbd.downloads.policy import AddressPolicy, policy_from_env
from thumbd.service import metrics

log = logging.getLogger("thumbd.download")

BACKOFF_BASE = 0.5  # seconds before the first retry; doubles each time, with jitter
BACKOFF_MAX = 60.0
MAX_RETRY_AFTER = 300.0  # a server asking for a longer wait gets a failure, not a stalled slot
IO_THREADS = 8  # aiofiles' writes, fsync, rename, getaddrinfo: short blocking calls


@dataclass(frozen=True, slots=True)
class UrlTask:
    """One URL of one manifest, and where it goes."""

    manifest: str  # the .urls file, relative to incoming/
    url: str
    folder: str  # relative to incoming/
    stem: str
    attempt: int = 1

    @property
    def host(self) -> str:
        return host_key(self.url)


@dataclass(frozen=True, slots=True)
class Fetched:
    """The downloader's outcome for one task, for the main loop."""

    task: UrlTask
    result: Result


def _outcome(result: Result) -> str:
    """A bounded label for the downloads metric."""
    if not isinstance(result, Failure):
        return "ok"
    reason = result.reason.lower()
    kinds = (
        ("http ", "http_error"),
        ("refused", "refused"),
        ("larger than", "too_large"),
        ("timed out", "network_error"),
        ("connect", "network_error"),
        ("cannot connect", "network_error"),
        ("cannot resolve", "network_error"),
        ("tls", "network_error"),
    )
    return next((outcome for prefix, outcome in kinds if reason.startswith(prefix)), "other")


# -- the scheduler ----------------------------------------------------------------------------


class Scheduler:
    """Queued URLs by host, handed out only while the host is below its limit (thread-safe: the
    main loop puts and drops, the event loop takes). Hosts are served round-robin; delayed
    retries wait in a heap until they are due."""

    def __init__(self, max_per_host: int) -> None:
        self.max_per_host = max_per_host
        self._lock = threading.Lock()
        self._queues: OrderedDict[str, deque[UrlTask]] = OrderedDict()
        self._delayed: list[tuple[float, int, UrlTask]] = []
        self._active: dict[str, int] = {}
        self._seq = itertools.count()
        self._accepting = True

    def put(self, task: UrlTask, delay: float = 0.0) -> bool:
        """Queue `task` (after `delay` seconds); False once the scheduler takes no more work."""
        with self._lock:
            if not self._accepting:
                return False
            if delay > 0:
                heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), task))
            else:
                self._queues.setdefault(task.host, deque()).append(task)
        return True

    def take(self) -> UrlTask | None:
        """A due task whose host has a free slot (the slot is now taken), or None."""
        with self._lock:
            self._promote_due()
            for host, queue in self._queues.items():
                if self._active.get(host, 0) < self.max_per_host:
                    task = queue.popleft()
                    if queue:
                        self._queues.move_to_end(host)  # round-robin between hosts
                    else:
                        del self._queues[host]
                    self._active[host] = self._active.get(host, 0) + 1
                    return task
            return None

    def try_acquire(self, host: str) -> bool:
        """A slot on `host` for a redirect hop, if one is free."""
        with self._lock:
            if self._active.get(host, 0) >= self.max_per_host:
                return False
            self._active[host] = self._active.get(host, 0) + 1
            return True

    def release(self, host: str) -> None:
        with self._lock:
            left = self._active.get(host, 0) - 1
            if left > 0:
                self._active[host] = left
            else:
                self._active.pop(host, None)

    def active(self, host: str) -> int:
        with self._lock:
            return self._active.get(host, 0)

    def drop(self, keep: Callable[[UrlTask], bool] = lambda t: False) -> list[UrlTask]:
        """Remove queued and delayed tasks that `keep` rejects; return them."""
        with self._lock:
            dropped: list[UrlTask] = []
            for host in list(self._queues):
                queue = self._queues[host]
                dropped += [t for t in queue if not keep(t)]
                kept = deque(t for t in queue if keep(t))
                if kept:
                    self._queues[host] = kept
                else:
                    del self._queues[host]
            dropped += [t for _, _, t in self._delayed if not keep(t)]
            self._delayed = [d for d in self._delayed if keep(d[2])]
            heapq.heapify(self._delayed)
            return dropped

    def stop_taking(self) -> list[UrlTask]:
        """No new work from now on; return what was still waiting."""
        with self._lock:
            self._accepting = False
        return self.drop()

    def until_due(self) -> float | None:
        """Seconds until the next delayed task is due, or None."""
        with self._lock:
            return max(0.0, self._delayed[0][0] - time.monotonic()) if self._delayed else None

    def _promote_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            task = heapq.heappop(self._delayed)[2]
            self._queues.setdefault(task.host, deque()).appendleft(task)


# -- the event loop ---------------------------------------------------------------------------


class Downloader:
    """The downloader thread and its event loop; outcomes are posted with `post` (the inbox).

    Called from the main loop: start, submit, drop, stop_taking, cancel, stop. Everything with
    an underscore runs on the event loop.
    """

    def __init__(
        self,
        config: DownloadConfig,
        root: str,
        post: Callable[[Fetched], None],
        *,
        policy: AddressPolicy | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.root = root
        self.post = post
        self.limits = Limits(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            total_timeout=config.total_timeout,
            max_bytes=config.max_bytes,
            max_redirects=config.max_redirects,
            user_agent=config.user_agent,
        )
        self.policy = policy or policy_from_env(config.allow_private_addresses)
        self.tls = tls
        self.scheduler = Scheduler(config.max_per_host)
        self.thread: threading.Thread | None = None
        self.fetcher: Fetcher
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event
        self._fetches: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, deque[asyncio.Future[bool]]] = {}  # redirect hops, per host
        self._timer: asyncio.TimerHandle | None = None
        self._ending = False

    # -- from the main loop ----------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="download", daemon=True)
        self.thread.start()
        self._ready.wait()

    def submit(self, task: UrlTask) -> bool:
        if not self.scheduler.put(task):
            return False
        self._call(self._dispatch)
        return True

    def drop(self, manifest_rel: str, keep_urls: Collection[str] = ()) -> list[UrlTask]:
        """Take the queued URLs of a manifest out, except `keep_urls`; return them."""
        return self.scheduler.drop(lambda t: t.manifest != manifest_rel or t.url in keep_urls)

    def stop_taking(self) -> list[UrlTask]:
        return self.scheduler.stop_taking()

    def cancel(self) -> None:
        """Cancel what is in flight: each fetch removes its temporary file, reports Cancelled."""
        self.scheduler.stop_taking()
        self._call(self._cancel_all)

    def stop(self, timeout: float = 10.0) -> None:
        self.scheduler.stop_taking()
        self._call(self._end)
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():  # an executor thread stuck in getaddrinfo, say
                log.warning("the downloader thread is still busy at exit")
            self.thread = None

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: it has stopped
                loop.call_soon_threadsafe(fn)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="download-io"))
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            loop.close()  # shuts the executor down without waiting for a stuck getaddrinfo

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stopped = asyncio.Event()
        max_idle = max(32, self.config.concurrency)
        self.fetcher = Fetcher(self.limits, self.policy, self.root, max_idle=max_idle, tls=self.tls)
        self._loop = loop
        self._ready.set()
        try:
            await self._stopped.wait()
            self._cancel_all()
            await asyncio.gather(*self._fetches, return_exceptions=True)
        finally:
            await self.fetcher.close()

    def _end(self) -> None:
        self._ending = True
        self._stopped.set()

    def _cancel_all(self) -> None:
        for fetch in self._fetches:
            fetch.cancel()

    # -- on the loop -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start fetches while there is room, then wake up again when a retry is due."""
        assert self._loop is not None
        while not self._ending and len(self._fetches) < self.config.concurrency:
            task = self.scheduler.take()
            if task is None:
                break
            fetch = self._loop.create_task(self._fetch(task))
            self._fetches.add(fetch)
            fetch.add_done_callback(self._fetched)
        if self._timer is not None:
            self._timer.cancel()
        due = self.scheduler.until_due()
        self._timer = None if due is None else self._loop.call_later(due, self._dispatch)

    def _fetched(self, fetch: asyncio.Task[None]) -> None:
        self._fetches.discard(fetch)
        self._dispatch()

    async def _fetch(self, task: UrlTask) -> None:
        slot = HostSlot(task.host, self._acquire, self._release)
        dest = Destination(self.root, task.folder, task.stem)
        started = time.monotonic()
        result: Result
        try:
            result = await self.fetcher.fetch(task.url, dest, slot)
        except asyncio.CancelledError:
            result = Cancelled()
        except Exception as e:  # a bug: keep the loop going and tell the main loop
            log.exception("downloading %s raised", task.url)
            result = Failure(f"internal error: {e!r}")
        finally:
            slot.release()
        if not isinstance(result, Cancelled):
            metrics.download_finished(time.monotonic() - started, _outcome(result))
        self._settle(task, result)

    async def _acquire(self, host: str) -> bool:
        """A slot on `host` for a redirect hop: now, or when a fetch there releases one."""
        if self.scheduler.try_acquire(host):
            return True
        assert self._loop is not None
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiting.setdefault(host, deque()).append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.scheduler.release(host)  # handed over just as the fetch was cancelled
            raise

    def _release(self, host: str) -> None:
        """Give the slot back; a redirect hop waiting for this host gets it first."""
        self.scheduler.release(host)
        waiters = self._waiting.get(host)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done() and self.scheduler.try_acquire(host):
                waiter.set_result(True)
                break
        if not waiters:
            self._waiting.pop(host, None)
        if self._loop is not None:  # the slot may start the host's next URL now
            self._loop.call_soon(self._dispatch)

    def _settle(self, task: UrlTask, result: Result) -> None:
        final: Result | None = result
        if isinstance(result, Failure) and result.retry:
            final = self._retry(task, result)
        if final is not None:
            self.post(Fetched(task, final))

    def _retry(self, task: UrlTask, failure: Failure) -> Result | None:
        """Queue the next attempt (None), or the final result when no attempt is left."""
        if task.attempt > self.config.retries:
            if task.attempt == 1:
                return failure
            return replace(failure, reason=f"{failure.reason}, {task.attempt} attempts")
        after = failure.retry_after
        if after is not None and after > MAX_RETRY_AFTER:
            return replace(failure, reason=f"{failure.reason}, asked to retry after {after:.0f} s")
        delay = backoff(task.attempt, after)
        if not self.scheduler.put(replace(task, attempt=task.attempt + 1), delay):
            return Cancelled()  # shutting down: the URL stays pending
        log.info("retrying %s in %.1f s: %s", task.url, delay, failure.reason)
        return None  # _fetched's dispatch sets the timer for it


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before attempt `attempt + 1`: what the server asked for, else exponential
    backoff with jitter (so that many failed URLs do not come back at the same moment)."""
    if retry_after is not None:
        return retry_after + random.uniform(0, min(1.0, retry_after / 10))
    grown: float = BACKOFF_BASE * 2.0 ** (attempt - 1)
    return min(BACKOFF_MAX, grown) * random.uniform(0.5, 1.5)
