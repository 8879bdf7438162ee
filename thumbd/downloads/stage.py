"""The download stage: URL manifests become images in incoming/, on a bounded set of threads.

Two halves:

- `Downloader`: `threads` downloader threads (never a thread per URL) fed by a scheduler that
  hands a thread a URL only when that URL's host is below `max_per_host` requests at once, so a
  busy host never blocks threads that could serve another. Retries wait in the scheduler, not in
  a thread. Each outcome goes back to the main loop as a `Fetched` message on its inbox; a
  failure is a value with a reason, never an exception crossing threads.
- `Downloads`: the main loop's side. It parses a settled manifest, skips URLs the state already
  has an outcome for, names the new ones (thumbd.manifest) and hands them to the downloader;
  it records every outcome (only the main loop writes the state) and logs per-manifest totals.

A downloaded file is renamed into `incoming/<dir>/<name>/`, where the normal image path takes it
(the main loop also touches it in the settler, as inotify can miss files in a folder created a
moment ago): downloads overlap with resizing, and the first thumbnails appear while later URLs
are still downloading. The manifest itself gets a row in `sources` once every URL it lists has
an outcome; until then a restart's scan finds it again and fetches only what is unfinished.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import shutil
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from thumbd.config import Config, DownloadConfig
from thumbd.downloads import manifest
from thumbd.downloads.fetch import (
    TMP_DIR,
    AddressPolicy,
    Cancelled,
    Connections,
    Destination,
    Downloaded,
    Failure,
    Fetcher,
    HostSlot,
    IPAddress,
    Limits,
    Result,
    Sockets,
    host_key,
    size_text,
    system_resolver,
)
from thumbd.render.spec import Signature
from thumbd.service import metrics
from thumbd.store.state import State

log = logging.getLogger("thumbd.download")

BACKOFF_BASE = 0.5  # seconds before the first retry; doubles each time, with jitter
BACKOFF_MAX = 60.0
MAX_RETRY_AFTER = 300.0  # a server asking for a longer wait gets a failure, not a stalled slot

# Test-only hooks (see docs/architecture.md): names resolved to fixed addresses, and addresses
# the private-address check treats as public. They exist so that tests can prove the address
# checks against servers on 127.0.0.x without touching /etc/hosts. A warning is logged when set.
TEST_RESOLVE = "THUMBD_TEST_RESOLVE"  # "photos.example=127.0.0.1;cdn.example=127.0.0.2,::1"
TEST_PUBLIC = "THUMBD_TEST_PUBLIC"  # "127.0.0.2"


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


def policy_from_env(allow_private: bool) -> AddressPolicy:
    """The address policy, with the test-only overrides if their variables are set."""
    import ipaddress

    names: dict[str, list[str]] = {}
    for item in os.environ.get(TEST_RESOLVE, "").split(";"):
        name, _, addresses = item.partition("=")
        found = [a.strip() for a in addresses.split(",") if a.strip()]
        if name.strip() and found:
            names[name.strip().lower()] = found
    public: frozenset[IPAddress] = frozenset(
        ipaddress.ip_address(a.strip())
        for a in os.environ.get(TEST_PUBLIC, "").split(",")
        if a.strip()
    )
    if names or public:
        log.warning("test-only address overrides are set (%s, %s)", TEST_RESOLVE, TEST_PUBLIC)

    def resolve(host: str, port: int) -> list[str]:
        return names.get(host.lower()) or system_resolver(host, port)

    return AddressPolicy(allow_private=allow_private, resolver=resolve, treat_as_public=public)


# -- the main loop's side ---------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    """A manifest with URLs out for download (in this process)."""

    manifest: str
    signature: Signature
    fetching: dict[str, str] = field(default_factory=dict)  # url -> stem
    rendering: set[str] = field(default_factory=set)  # downloaded, thumbnails not written yet
    outcomes: int = 0  # URLs done or failed in this process, for the totals line
    interrupted: bool = False  # some URLs stay pending (shutdown, manifest deleted)
    recorded: bool = False


class Downloads:
    """Manifests and their URLs, on the main loop: the only side that touches the state."""

    def __init__(self, config: Config, post: Callable[[Any], None]) -> None:
        self.config = config
        self.root = str(config.paths.incoming)
        self.post = post
        self.state: State
        self.downloader: Downloader | None = None
        self.runs: dict[str, _Run] = {}
        self.owner: dict[str, str] = {}  # downloaded file -> its manifest, until rendered
        self.bytes_downloaded = 0
        self.hinted = False  # the allow_private_addresses hint is logged once

    def start(self, state: State) -> None:
        """Clear what a killed daemon left half-downloaded (never under a final name)."""
        self.state = state
        shutil.rmtree(os.path.join(self.root, TMP_DIR), ignore_errors=True)

    def reconfigure(self, config: Config) -> None:
        """A reload. Under a new incoming/, the downloads under the old one end (cancelled:
        no file under a final name; their manifests stay pending there, read again whenever
        that folder is watched again) and manifests are read from the new one. New [download]
        settings apply from the next download started while none is in flight."""
        moved = str(config.paths.incoming) != self.root
        self.config = config
        if not moved:
            return
        self.stop_taking()
        self.cancel()
        self._retire()
        self.runs.clear()
        self.owner.clear()
        self.root = str(config.paths.incoming)
        self.start(self.state)

    def _retire(self) -> None:
        """Let the downloader's threads finish away from the main loop (a thread blocked in
        getaddrinfo cannot be interrupted)."""
        old, self.downloader = self.downloader, None
        if old is not None:
            threading.Thread(target=old.stop, name="download-retire", daemon=True).start()

    def busy(self) -> bool:
        return any(run.fetching for run in self.runs.values())

    def in_flight(self) -> int:
        return sum(len(run.fetching) for run in self.runs.values())

    # -- a manifest settled ----------------------------------------------------------------

    def take(self, rel: str, sig: Signature) -> None:
        entries = self._read(rel, sig)
        if entries is None:
            return
        listed = {e.url for e in entries}
        self.state.forget_failed_urls(rel, keep=listed)
        records = self.state.url_records(rel)
        run = self.runs.setdefault(rel, _Run(rel, sig))
        run.signature, run.interrupted, run.recorded = sig, False, False
        self._drop_unlisted(run, listed)
        for e in entries:
            if e.error is not None and e.url not in records:
                self.state.record_url_failed(rel, e.url, e.error)
                log.warning("failed %s (line %d of %s): %s", e.url, e.line, rel, e.error)
                run.outcomes += 1
        todo = [
            e.url
            for e in entries
            if e.error is None and e.url not in records and e.url not in run.fetching
        ]
        valid = [e.url for e in entries if e.error is None]
        self._submit(run, valid, todo, records)
        self._check_finished(run)

    def _drop_unlisted(self, run: _Run, listed: set[str]) -> None:
        """A manifest rewritten while its URLs download: the queued URLs it no longer lists are
        not fetched (those already in flight finish, as when a manifest is deleted)."""
        if self.downloader is None or run.fetching.keys() <= listed:
            return
        dropped = self.downloader.drop(run.manifest, keep_urls=listed)
        for task in dropped:
            run.fetching.pop(task.url, None)
        if dropped:
            log.info(
                "manifest %s: %d queued URLs are no longer listed; not downloading them",
                run.manifest,
                len(dropped),
            )

    def _read(self, rel: str, sig: Signature) -> list[manifest.Entry] | None:
        path = os.path.join(self.root, rel)
        try:
            with open(path, "rb") as f:
                data = f.read(manifest.MAX_MANIFEST_BYTES + 1)
            return manifest.parse(manifest.decode(data))
        except manifest.ManifestError as e:
            self.state.record_failed(rel, sig, str(e), sig[0])
            log.warning("failed %s: %s", rel, e)
        except OSError as e:
            log.info("cannot read manifest %s (%s); skipping it", rel, e.strerror)
        return None

    def _submit(
        self, run: _Run, listed: list[str], urls: list[str], records: dict[str, Any]
    ) -> None:
        """Download `urls`, named in a plan over every URL the manifest `listed`: a URL left
        pending by a restart gets the name it would have had in one go, not its plain name
        because the URL it clashes with is done already."""
        if not urls:
            return
        taken = [manifest.file_stem(r.file) for r in records.values() if r.file]
        stems = manifest.plan_names(listed, [*taken, *run.fetching.values()])
        folder = manifest.folder_for(run.manifest)
        downloader = self._downloader()
        for url in urls:
            task = UrlTask(run.manifest, url, folder, stems[url])
            if downloader.submit(task):
                run.fetching[url] = task.stem
        log.info(
            "manifest %s: %d URLs to download into %s/ (%d already have an outcome)",
            run.manifest,
            len(urls),
            folder,
            len(records),
        )

    def _downloader(self) -> Downloader:
        stale = self.downloader is not None and self.downloader.config != self.config.download
        if stale and not self.busy():  # reloaded with new settings: new threads from now on
            self._retire()
        if self.downloader is None:  # no threads until the first manifest needs them
            self.downloader = Downloader(self.config.download, self.root, self.post)
            self.downloader.start()
        return self.downloader

    # -- outcomes --------------------------------------------------------------------------

    def on_fetched(self, message: Fetched) -> str | None:
        """Record an outcome; return the downloaded file (relative to incoming/) to take."""
        task, result = message.task, message.result
        run = self.runs.get(task.manifest)
        if run is not None:
            run.fetching.pop(task.url, None)
        taken: str | None = None
        if isinstance(result, Downloaded):
            taken = self._done(task, result, run)
        elif isinstance(result, Failure):
            self._failed(task, result.reason, run)
        elif run is not None:
            run.interrupted = True  # cancelled: stays pending for the next start
        if run is not None:
            self._check_finished(run)
        return taken

    def _failed(self, task: UrlTask, reason: str, run: _Run | None) -> None:
        self.state.record_url_failed(task.manifest, task.url, reason)
        log.warning("failed %s (%s): %s", task.url, task.manifest, reason)
        if run is not None:
            run.outcomes += 1
        if reason.startswith("refused: private address") and not self.hinted:
            self.hinted = True
            log.info("(hosts on private networks need [download] allow_private_addresses = true)")

    def _done(self, task: UrlTask, result: Downloaded, run: _Run | None) -> str:
        self.state.record_url_done(task.manifest, task.url, result.file, result.size)
        self.bytes_downloaded += result.size
        log.info("downloaded %s -> %s (%s)", task.url, result.file, size_text(result.size))
        if run is not None:
            run.rendering.add(result.file)
            run.outcomes += 1
            self.owner[result.file] = task.manifest
        return result.file

    def on_rendered(self, rel: str) -> None:
        """The image path recorded `rel` (done or failed)."""
        owner = self.owner.pop(rel, None)
        run = self.runs.get(owner) if owner is not None else None
        if run is not None:
            run.rendering.discard(rel)
            self._check_finished(run)

    def on_deleted(self, rel: str) -> None:
        """A manifest was removed: drop its queued URLs and forget its failures."""
        self.state.forget_failed_urls(rel)
        run = self.runs.get(rel)
        if run is None or self.downloader is None:
            return
        for task in self.downloader.drop(rel):
            run.fetching.pop(task.url, None)
        run.interrupted = True
        self._check_finished(run)

    def _check_finished(self, run: _Run) -> None:
        if run.fetching:
            return
        if not run.interrupted and not run.recorded:
            self.state.record_manifest(run.manifest, run.signature)
            run.recorded = True
        if run.rendering and not run.interrupted:
            return
        if run.outcomes:
            self._log_totals(run.manifest)
        del self.runs[run.manifest]
        for file in run.rendering:
            self.owner.pop(file, None)

    def _log_totals(self, rel: str) -> None:
        for t in self.state.manifest_totals(rel):
            log.info(
                "manifest %s: %d URLs done, %d failed ◆ downloaded %s, thumbnails %s",
                t.manifest,
                t.done,
                t.failed,
                size_text(t.bytes_downloaded),
                size_text(t.bytes_out),
            )

    # -- shutdown --------------------------------------------------------------------------

    def stop_taking(self) -> None:
        """Start no more downloads; what was queued stays pending (the manifest is on disk).

        No manifest is recorded complete from here on, even if its last downloads finish
        while draining: the next start re-reads it, finds every URL done and records it then.
        """
        for each in self.runs.values():
            each.interrupted = True
        if self.downloader is None:
            return
        for task in self.downloader.stop_taking():
            run = self.runs.get(task.manifest)
            if run is not None:
                run.fetching.pop(task.url, None)

    def cancel(self) -> None:
        if self.downloader is not None:
            self.downloader.cancel()

    def stop(self) -> None:
        if self.downloader is not None:
            self.downloader.stop()
        shutil.rmtree(os.path.join(self.root, TMP_DIR), ignore_errors=True)
