"""The download stage's threads: `threads` downloader threads (never a thread per URL) fed by
a scheduler that hands a thread a URL only when that URL's host is below `max_per_host`
requests at once, so a busy host never blocks threads that could serve another.

Retries wait in the scheduler, not in a thread: a retryable failure comes back after an
exponential backoff with jitter, or after the wait the server asked for (`Retry-After`, up to
MAX_RETRY_AFTER). Each final outcome goes back to the main loop as a `Fetched` message on its
inbox; a failure is a value with a reason, never an exception crossing threads. These threads
never touch the state: stage.Downloads, on the main loop, records what they post.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from thumbd.config import DownloadConfig
from thumbd.downloads.connections import Connections, Sockets
from thumbd.downloads.fetch import Fetcher, HostSlot, host_key
from thumbd.downloads.files import Destination
from thumbd.downloads.outcomes import Cancelled, Failure, Limits, Result
from thumbd.downloads.policy import AddressPolicy, policy_from_env
from thumbd.service import metrics

log = logging.getLogger("thumbd.download")

BACKOFF_BASE = 0.5  # seconds before the first retry; doubles each time, with jitter
BACKOFF_MAX = 60.0
MAX_RETRY_AFTER = 300.0  # a server asking for a longer wait gets a failure, not a stalled slot


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
    """A downloader thread's outcome for one task, for the main loop."""

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
    """Queued URLs by host, handed out only while the host is below its limit.

    `take` blocks until a task whose host has a free slot is due, and returns None once the
    scheduler is stopped (the threads' poison pill). Hosts are served round-robin.
    """

    def __init__(self, max_per_host: int) -> None:
        self.max_per_host = max_per_host
        self._cond = threading.Condition()
        self._queues: OrderedDict[str, deque[UrlTask]] = OrderedDict()
        self._delayed: list[tuple[float, int, UrlTask]] = []
        self._active: dict[str, int] = {}
        self._seq = itertools.count()
        self._accepting = True
        self._stopped = False

    def put(self, task: UrlTask, delay: float = 0.0) -> bool:
        """Queue `task` (after `delay` seconds); False once the scheduler takes no more work."""
        with self._cond:
            if not self._accepting:
                return False
            if delay > 0:
                heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), task))
            else:
                self._queues.setdefault(task.host, deque()).append(task)
            self._cond.notify_all()
        return True

    def take(self) -> UrlTask | None:
        with self._cond:
            while not self._stopped:
                self._promote_due()
                task = self._next()
                if task is not None:
                    return task
                self._cond.wait(timeout=self._until_due())
            return None

    def acquire(self, host: str) -> bool:
        """A slot on `host` for a redirect hop; False when stopping."""
        with self._cond:
            while not self._stopped and self._active.get(host, 0) >= self.max_per_host:
                self._cond.wait()
            if self._stopped:
                return False
            self._active[host] = self._active.get(host, 0) + 1
            return True

    def release(self, host: str) -> None:
        with self._cond:
            left = self._active.get(host, 0) - 1
            if left > 0:
                self._active[host] = left
            else:
                self._active.pop(host, None)
            self._cond.notify_all()

    def drop(self, keep: Callable[[UrlTask], bool] = lambda t: False) -> list[UrlTask]:
        """Remove queued and delayed tasks that `keep` rejects; return them."""
        with self._cond:
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
        with self._cond:
            self._accepting = False
        return self.drop()

    def stop(self) -> None:
        with self._cond:
            self._accepting = False
            self._stopped = True
            self._cond.notify_all()

    def _promote_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            task = heapq.heappop(self._delayed)[2]
            self._queues.setdefault(task.host, deque()).appendleft(task)

    def _next(self) -> UrlTask | None:
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

    def _until_due(self) -> float | None:
        return max(0.0, self._delayed[0][0] - time.monotonic()) if self._delayed else None


# -- the threads ------------------------------------------------------------------------------


class Downloader:
    """`threads` downloader threads; outcomes are posted with `post` (the daemon's inbox)."""

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
        self.sockets = Sockets()
        self.connections = Connections(config.max_per_host, max(32, 2 * config.threads))
        limits = Limits(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            total_timeout=config.total_timeout,
            max_bytes=config.max_bytes,
            max_redirects=config.max_redirects,
            user_agent=config.user_agent,
        )
        policy = policy or policy_from_env(config.allow_private_addresses)
        self.fetcher = Fetcher(limits, policy, root, self.sockets, self.connections, tls=tls)
        self.scheduler = Scheduler(config.max_per_host)
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.config.threads):
            t = threading.Thread(target=self._work, name=f"download-{i + 1}", daemon=True)
            t.start()
            self.threads.append(t)

    def submit(self, task: UrlTask) -> bool:
        return self.scheduler.put(task)

    def drop(self, manifest_rel: str, keep_urls: Collection[str] = ()) -> list[UrlTask]:
        """Take the queued URLs of a manifest out, except `keep_urls`; return them."""
        return self.scheduler.drop(lambda t: t.manifest != manifest_rel or t.url in keep_urls)

    def stop_taking(self) -> list[UrlTask]:
        return self.scheduler.stop_taking()

    def cancel(self) -> None:
        """Abort what is in flight: blocked reads wake up, the threads report Cancelled."""
        self.scheduler.stop_taking()
        self.sockets.cancel()

    def stop(self, timeout: float = 10.0) -> None:
        self.scheduler.stop()
        self.sockets.cancel()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:  # in getaddrinfo, which cannot be interrupted; daemon threads, so harmless
            log.warning("downloader threads still busy at exit: %s", ", ".join(stuck))
        self.threads.clear()
        self.connections.close_all()

    def _work(self) -> None:
        while (task := self.scheduler.take()) is not None:
            slot = HostSlot(task.host, self.scheduler.acquire, self.scheduler.release)
            dest = Destination(self.root, task.folder, task.stem)
            started = time.monotonic()
            try:
                result = self.fetcher.fetch(task.url, dest, slot)
            except Exception as e:  # a bug: keep the thread and tell the main loop
                log.exception("downloading %s raised", task.url)
                result = Failure(f"internal error: {e!r}")
            finally:
                slot.release()
            if not isinstance(result, Cancelled):
                metrics.download_finished(time.monotonic() - started, _outcome(result))
            self._settle(task, result)

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
        return None


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before attempt `attempt + 1`: what the server asked for, else exponential
    backoff with jitter (so that many failed URLs do not come back at the same moment)."""
    if retry_after is not None:
        return retry_after + random.uniform(0, min(1.0, retry_after / 10))
    grown: float = BACKOFF_BASE * 2.0 ** (attempt - 1)
    return min(BACKOFF_MAX, grown) * random.uniform(0.5, 1.5)
