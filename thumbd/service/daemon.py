"""The supervisor: start-up, main loop, drain, shutdown, in that order, in `Daemon.run()`.

One thread, the main loop, owns every piece of mutable state: the settle tracker, the queue of
ready jobs, the jobs in flight and the SQLite state. Everything else talks to it through one
inbox (a SimpleQueue, whose put is safe even from a signal handler): the observer thread posts
filesystem events, the scanner posts what it found, the pool's futures post their results, the
signal handlers post the signal. The filesystem is the queue of record: a source stays where it
is, and counts as done only once its thumbnails are renamed into place and the state says so.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import pwd
import queue
import signal
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from thumbd.config import Config, ConfigError, differences, load_config
from thumbd.downloads.stage import Downloads, Fetched
from thumbd.executors.base import Pool, TaskTimeout, WorkerCrashed
from thumbd.executors.factory import PoolUnavailable, make_pool, pool_settings
from thumbd.intake import scanner
from thumbd.intake.settle import Kind, Settler, classify, shown, signature, storable
from thumbd.intake.watcher import (
    DirArrived,
    DirChanged,
    DirGone,
    FsEvent,
    Overflow,
    Unlisted,
    Watcher,
)
from thumbd.output import names
from thumbd.output.writer import NO_SPACE, UnsafePath, Writer, plain_key
from thumbd.render.pipeline import spec_from_config
from thumbd.render.spec import RenderResult, Signature
from thumbd.service import logs, metrics, pidfile
from thumbd.service.monitor import Monitor, Snapshot
from thumbd.service.notify import Notifier
from thumbd.store import recovery
from thumbd.store.state import State, damaged, is_damage

log = logging.getLogger("thumbd")

CRASH_ATTEMPTS = 2  # a source that kills its worker this many times is recorded as failed
DISK_FULL_RETRY = 5.0  # seconds between tries to write while outgoing/ is full
RETRY_CHECK = 0.5  # seconds between looks for `thumbd retry` requests
STATE_CHECK = 1.0  # seconds between looks whether the state's files are still the ones open
RESCAN_GAP = 2.0  # at least this long (or one scan's duration) between back-to-back rescans
OBSERVER_RETRY_MAX = 30.0  # seconds between tries to restart an observer that cannot start
STOP_MARGIN = 30.0  # seconds past shutdown_timeout a drain may take (`thumbd stop` waits as long)
STALL_GRACE = 30.0  # seconds past the pool's timeouts before a pool with no results is stuck
# While files keep coming, their records share one commit this often: a commit per file costs
# the main thread more than writing the record. Once nothing is in flight, records are committed
# at once. A crash loses at most this stretch of records, never a thumbnail: those sources are
# simply rendered again.
# SQLite's answers that mean the state folder cannot take a record (full, read-only, failing):
# the daemon stops cleanly rather than go on rendering what it cannot record.
_CANNOT_RECORD = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}
)
COMMIT_EVERY = 0.25


class StartupError(Exception):
    """The daemon cannot start (a missing folder, another daemon running): says why."""


@dataclass(frozen=True, slots=True)
class Job:
    """One source to render: the path and the signature it settled at."""

    rel: str
    path: str
    signature: Signature
    seen: float  # monotonic time it was taken, for the latency in the log line
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Completed:
    job: Job
    future: Future[RenderResult]


@dataclass(frozen=True, slots=True)
class ScanBatch:
    rels: list[str]
    final: bool


@dataclass(frozen=True, slots=True)
class Gone:
    """Recorded sources a complete scan did not find: deleted while nobody was looking."""

    rels: list[str]


@dataclass(frozen=True, slots=True)
class Signalled:
    signum: int


@dataclass(slots=True)
class Stats:
    """What this run did, for the summary line at exit."""

    done: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = field(default_factory=time.monotonic)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        once: bool = False,
        progress: logs.Progress | None = None,
        notifier: Notifier | None = None,
    ):
        self.config = config
        self.once = once
        self.progress = progress
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.root = str(config.paths.incoming)
        self.real_root = os.path.realpath(self.root)
        self.real_dirs: dict[str, str] = {}
        self.unlisted: set[str] = set()  # folders that could not be listed (nor watched)
        self.stale_watches = False  # a folder moved out keeps its watches until a new observer
        self.siblings = recovery.Siblings()  # same-stem files per folder, for adoption
        self.spec = spec_from_config(config)
        self.settler = Settler(self.root, config.watch.settle_seconds, config.watch.quiet_seconds)
        self.writer = Writer(config.paths.outgoing)
        self.downloads = Downloads(config, self.inbox.put)
        self.ready: deque[Job] = deque()
        self.queued: set[str] = set()
        self.in_flight: dict[str, Job] = {}
        self.unwritten: deque[tuple[Job, RenderResult]] = deque()
        self.stats = Stats()
        self.dropped = 0  # jobs left on disk by a shutdown: no longer queued, still pending
        self.stop_reason: str | None = None
        self.scan_stop = threading.Event()
        self.scan_thread: threading.Thread | None = None
        self.rescan_wanted = False
        self.arrivals = 0  # paths scans, downloads and retries handed in: `once`'s total
        self.scan_found = 0
        self.next_rescan = 0.0
        self.scan_started = 0.0
        self.disk_full_until = 0.0
        self.disk_full_logged = 0.0
        self.next_retry_check = 0.0
        self.lock = pidfile.StateLock(config.paths.state)
        self.next_state_check = 0.0
        self.state: State
        self.pool: Pool
        self.retired_pools: list[Pool] = []  # replaced on reload, finishing their jobs
        self.retired_restarts = 0
        self.watcher: Watcher | None = None
        self.observer_retry_at = 0.0
        self.observer_backoff = 0.0
        self.last_progress = time.monotonic()  # the last result, or when in_flight filled up
        if notifier is None:
            notifier = Notifier(None) if once else Notifier.from_environment()
        self.monitor = Monitor(notifier, config.paths.state)  # `once` too: status shows it
        self.metrics_server: metrics.Server | None = None

    # -- the lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Start up, work until told to stop (or, once, until nothing is left), drain, stop."""
        threading.current_thread().name = "main"
        with self.signals():
            self.startup()
            try:
                self.main_loop()
                self.drain()
            except sqlite3.DatabaseError as e:
                if is_damage(e):
                    self.stop_reason = "the state database is damaged"
                    log.error("%s; stopping", damaged(self.config.state_db, e))
                    return 1
                if getattr(e, "sqlite_errorcode", 0) & 0xFF not in _CANNOT_RECORD:
                    raise  # a bug: keep the traceback
                self.cannot_record(e)
                return 1
            finally:
                self.shutdown()
        if self.once and self.unlisted:  # their images were never seen: not all done
            log.warning(
                "not done: images in folders that could not be read (permissions?): %s",
                ", ".join(shown(rel) for rel in sorted(self.unlisted)),
            )
        if self.once and self.stop_reason != "done":  # a signal: what is left stays pending
            log.warning(
                "not done: stopped by %s before the end; thumbd once again takes up the rest",
                self.stop_reason,
            )
            return 1
        return 1 if self.once and (self.unlisted or self.state_failed()) else 0

    def cannot_record(self, e: sqlite3.DatabaseError) -> None:
        """The state database cannot be written (its disk is full, say). Stop: the records of
        the last moments are rolled back, and their thumbnails, already in place, are recorded
        by the next start without rendering (recovery.own_thumbnails); nothing is lost."""
        self.stop_reason = "the state database cannot be written"
        log.error(
            "cannot record in %s: %s; stopping. Make room there (or fix it) and start thumbd "
            "again: the thumbnails already written stay and nothing is rendered twice",
            self.config.state_db,
            e,
        )

    def startup(self) -> None:
        self._check_folders()
        _check_owner(self.config, "once" if self.once else "run")
        try:
            self._take_lock()
        except OSError as e:
            raise cannot(self.config, "[paths] state", "use", e) from None
        self.state = recovery.open_state(self.config.state_db, self.config.paths.outgoing)
        recovery.after_reboot(self.state, self.config.paths.outgoing)
        self.state.take_retries()  # the start-up scan finds every source without a record
        _prepare(self.writer, self.config)
        if not self.once:
            self.metrics_server = self._serve_metrics(self.config.metrics.listen)
        self.downloads.start(self.state)
        self.pool = self._make_pool()
        if not self.once:
            self.watcher = Watcher(self.root, self.inbox, polling=self.config.watch.polling)
            self.watcher.start()
        self.start_scan()
        log.info(
            "thumbd started: %s -> %s, widths %s, %s%s",
            self.root,
            self.config.paths.outgoing,
            ", ".join(map(str, self.config.thumbnails.widths)),
            self.pool.describe(),
            " (once)" if self.once else "",
        )
        self.monitor.ready(self.snapshot())

    def main_loop(self) -> None:
        while self.stop_reason is None:
            message = self.next_message()
            self.state.begin()  # joins the batch still open from the last pass, if any
            self.handle(message)
            self.drain_inbox()
            self.take_ready()
            self.retry_unwritten()
            self.dispatch()
            self.commit_when_due()
            self.housekeeping()
            self.show_progress()
            if self.once and self.idle():
                self.stop_reason = "done"
        self.state.commit()

    def drain(self) -> None:
        """Stop taking new work; let what is in flight finish within shutdown_timeout."""
        if self.watcher is not None:
            self.watcher.stop()
        self.scan_stop.set()
        self.dropped += len(self.ready)  # they stay pending: the summary line counts them
        self.ready.clear()
        for pool in self.pools():
            pool.shutdown(wait=False, cancel_futures=True)
        self.downloads.stop_taking()
        deadline = time.monotonic() + self.config.daemon.shutdown_timeout
        while (self.in_flight or self.downloads.busy()) and time.monotonic() < deadline:
            try:
                message = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(message, Completed | Fetched):
                with self.state.transaction():
                    self.handle(message)
        if self.downloads.busy():
            log.warning(
                "%d downloads still running after %.0f s; cancelling them (they stay pending)",
                self.downloads.in_flight(),
                self.config.daemon.shutdown_timeout,
            )
        self.downloads.cancel()  # a cancelled download leaves no file under a final name
        if self.in_flight:
            log.warning(
                "%d jobs still running after %.0f s; stopping them (they stay pending)",
                len(self.in_flight),
                self.config.daemon.shutdown_timeout,
            )
            for pool in self.pools():
                pool.terminate()

    def shutdown(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.scan_stop.set()
        if self.scan_thread is not None:
            self.scan_thread.join()
        for pool in self.pools():
            pool.shutdown(wait=True, cancel_futures=True)
        self.downloads.stop()
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.monitor.close()
        self.writer.cleanup()
        left = len(self.settler) + len(self.in_flight) + len(self.unwritten) + self.dropped
        self.state.close()
        self._end_progress()
        s = self.stats
        downloaded = self.downloads.bytes_downloaded
        log.info(
            "stopped (%s) ◆ %d done ◆ %d failed ◆ %d left ◆ %sread %s, wrote %s in %.1f s",
            self.stop_reason,
            s.done,
            s.failed,
            left,
            f"downloaded {_size(downloaded)}, " if downloaded else "",
            _size(s.bytes_in),
            _size(s.bytes_out),
            time.monotonic() - s.started,
        )

    # -- signals ---------------------------------------------------------------------------

    @contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT ask for a drain; a second one exits at once. SIGHUP asks for a reload.
        Restores the old handlers."""
        got: list[int] = []

        def handler(signum: int, frame: object) -> None:
            if got:
                os.write(2, b"thumbd: second signal, exiting now\n")
                pools = self.pools() if hasattr(self, "pool") else []  # none yet at start-up
                for pool in pools:  # a hung worker would outlive the daemon for ever
                    pool.kill()
                os._exit(128 + signum)
            got.append(signum)
            self.inbox.put(Signalled(signum))

        def post(signum: int, frame: object) -> None:
            self.inbox.put(Signalled(signum))

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, post)
        if os.environ.get("THUMBD_TEST_HOOKS") == "1":  # tests only: SIGUSR2 stops the observer
            old[signal.SIGUSR2] = signal.signal(signal.SIGUSR2, post)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # -- messages --------------------------------------------------------------------------

    def next_message(self) -> Any:
        try:
            return self.inbox.get(timeout=self.wait_time())
        except queue.Empty:
            return None

    def wait_time(self) -> float:
        now = time.monotonic()
        due = self.settler.next_due()
        wait = 1.0 if due is None else min(1.0, max(0.0, due - now))
        wait = min(wait, max(0.0, self.monitor.due() - now))
        if self.unwritten:
            wait = min(wait, max(0.0, self.disk_full_until - now))
        uncommitted = self.state.open_for()
        if uncommitted is not None and (not self.in_flight or uncommitted >= COMMIT_EVERY):
            wait = min(wait, max(0.0, COMMIT_EVERY - uncommitted))
        return wait

    def commit_when_due(self) -> None:
        uncommitted = self.state.open_for()
        if uncommitted is not None and (not self.in_flight or uncommitted >= COMMIT_EVERY):
            self.state.commit()

    def drain_inbox(self) -> None:
        for _ in range(10_000):
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return
            self.handle(message)

    def handle(self, message: Any) -> None:
        if message is None:
            return
        if isinstance(message, FsEvent):
            self.on_event(message)
        elif isinstance(message, Completed):
            self.on_completed(message.job, message.future)
        elif isinstance(message, Fetched):
            self.on_fetched(message)
        elif isinstance(message, ScanBatch):
            self.on_scan(message)
        elif isinstance(message, Gone):
            self.on_scan_gone(message.rels)
        elif isinstance(message, DirArrived):
            self.on_dir(message.rel)
        elif isinstance(message, DirGone):
            self.on_dir_gone(message.rel)
        elif isinstance(message, Unlisted):
            self.unlisted.add(message.rel)
        elif isinstance(message, DirChanged):
            self.on_dir_changed(message.rel)
        elif isinstance(message, Overflow):
            if not self.rescan_wanted:  # once per scan, not once per overflow: floods repeat
                log.warning("inotify queue overflowed: events were lost; rescanning %s", self.root)
            self.start_scan()
        elif isinstance(message, Signalled):
            self.on_signal(message.signum)

    def on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self.reload()
        elif signum == signal.SIGUSR2:
            self.kill_observer()
        else:
            self.stop_reason = signal.Signals(signum).name
            # systemd's TimeoutStopSec= must not cut the drain short: ask for what it may take.
            self.monitor.stopping(self.config.daemon.shutdown_timeout + STOP_MARGIN)
            log.info("%s: draining (%d in flight)", self.stop_reason, len(self.in_flight))

    def on_event(self, e: FsEvent) -> None:
        if not storable(e.rel):  # never recorded: nothing to take or forget
            if e.closed and classify(shown(e.rel), self.config.watch.ignore) is not None:
                self.unnamed(e.rel)
            return
        if e.deleted:
            if os.path.lexists(os.path.join(self.root, e.rel)):
                # There again (replaced at once: its own events follow), or not ours: the watch
                # of a folder moved out of incoming/ still reports its files under their old
                # names (watchdog keeps it), and a new folder may have that name now.
                return
            self.settler.discard(e.rel)
            if e.rel not in self.in_flight:  # else its result finds it gone
                self.on_gone(e.rel)
            return
        if classify(e.rel, self.config.watch.ignore) is not None:
            self.settler.touch(e.rel, time.monotonic(), closed=e.closed)

    def unnamed(self, rel: str) -> None:
        log.warning(
            "skipping %s: its name is not valid UTF-8; rename it (convmv) to have it thumbnailed",
            shown(os.path.join(self.root, rel)),
        )

    def on_dir(self, rel: str) -> None:
        """A folder moved in from outside: its files are complete as they are."""
        if not storable(rel):
            self.unnamed(rel)
            return
        now = time.monotonic()

        def unlisted(sub: str) -> None:
            self.unlisted.add(f"{rel}/{sub}" if sub else rel)

        folder = os.path.join(self.root, rel)
        for sub, _ in scanner.walk(folder, self.config.watch.ignore, unlisted):
            self.settler.touch(f"{rel}/{sub}", now, closed=True)

    def on_dir_changed(self, rel: str) -> None:
        """A folder's permissions changed: if a folder that could not be listed can be now, it
        has no watch (watchdog does not retry): watch the tree again and rescan, which takes
        its files and finds any folder still unreadable."""
        prefix = f"{rel}/"
        readable = [
            u
            for u in self.unlisted
            if (u == rel or u.startswith(prefix)) and scanner.listable(os.path.join(self.root, u))
        ]
        if not readable or self.watcher is None or self.watcher.polling:
            return  # polling sees them anyway
        self.unlisted.difference_update(readable)
        log.info(
            "%s can be read now; watching it and looking at its files",
            ", ".join(sorted(readable)),
        )
        self.rewatch(moved=False)

    def on_scan(self, batch: ScanBatch) -> None:
        now = time.monotonic()
        for rel in batch.rels:
            if rel not in self.in_flight and rel not in self.queued:
                self.settler.found(rel, now)
        self.arrivals += len(batch.rels)
        self.scan_found += len(batch.rels)
        if batch.final:
            log.info("scan of %s: %d to look at", self.root, self.scan_found)
            self.scan_thread = None
            if self.rescan_wanted:
                self.rescan_wanted = False
                self.rescan_soon(now)

    # -- deleted sources -------------------------------------------------------------------

    def on_gone(self, rel: str, *, log_each: bool = True) -> bool:
        """A source is gone: forget its record; `[thumbnails] on_delete` says what happens to
        its thumbnails. A source never processed has no record: nothing to say."""
        if classify(rel, self.config.watch.ignore) is Kind.MANIFEST:
            self.downloads.on_deleted(rel)  # drop its queued URLs, forget its failures
        else:
            self.downloads.on_rendered(rel)  # a downloaded image no manifest should wait for
        record = self.state.forget(rel)
        if record is None:
            return False
        remove = self.config.thumbnails.on_delete == "remove"
        if remove:  # not the names a sibling's row lists too (a state from before names.py)
            for name in names.unowned(record.outputs, self.state.outputs_near(plain_key(rel))):
                self.writer.remove(name, prune=True)
        if log_each:
            what = "removed its thumbnails" if remove else "its thumbnails stay"
            log.info("removed %s: forgetting it (%s)", rel, what)
        return True

    def on_dir_gone(self, rel: str) -> None:
        """A folder was moved out of incoming/: its sources are gone as if deleted one by one
        (its manifests' downloads stop too)."""
        self.stale_watches = self.watcher is not None and not self.watcher.polling
        if not storable(rel):
            return  # nothing below it was recorded
        prefix = f"{rel}/"
        rels = {*self.state.paths_under(rel), *self.downloads.runs, *self.downloads.owner}
        forgotten = sum(
            self.on_gone(r, log_each=False)
            for r in sorted(rels)
            if r.startswith(prefix)
            and r not in self.in_flight  # its result finds it gone
            and not os.path.lexists(os.path.join(self.root, r))
        )
        if forgotten:
            log.info(
                "%s moved away: forgot its %d sources (%s)",
                rel,
                forgotten,
                "and removed their thumbnails"
                if self.config.thumbnails.on_delete == "remove"
                else "their thumbnails stay",
            )

    def on_scan_gone(self, rels: list[str]) -> None:
        busy = self.in_flight.keys() | self.queued
        with self.state.transaction():
            forgotten = sum(
                self.on_gone(rel, log_each=False)
                for rel in rels
                if rel not in busy
                and rel not in self.settler
                and not os.path.lexists(os.path.join(self.root, rel))
            )
        if forgotten:
            log.info(
                "scan: %d recorded sources no longer exist; forgot them (%s)",
                forgotten,
                "and removed their thumbnails"
                if self.config.thumbnails.on_delete == "remove"
                else "their thumbnails stay",
            )

    # -- from ready to in flight -----------------------------------------------------------

    def take_ready(self) -> None:
        now = time.monotonic()
        self.real_dirs.clear()  # symlinks may change between calls, not within one
        for rel, sig in self.settler.pop_ready(now):
            if rel in self.in_flight or rel in self.queued:
                self.settler.found(rel, now)  # look again once the running job is through
                continue
            record = self.state.get(rel)
            if record is not None and record.signature == sig:
                continue  # done or failed for exactly this content
            if classify(rel, self.config.watch.ignore) is Kind.MANIFEST:
                self.downloads.take(rel, sig)  # its URLs go to the downloader threads
                continue
            job = Job(rel, os.path.join(self.root, rel), sig, now)
            if self.refused(job) or (record is None and self.adopted(job)):
                continue
            self.ready.append(job)
            self.queued.add(rel)

    def refused(self, job: Job) -> bool:
        """Sources not worth a worker: too big, or reached through a symlinked folder."""
        folder = os.path.dirname(job.path)
        real = self.real_dirs.get(folder) or self.real_dirs.setdefault(
            folder, os.path.realpath(folder)
        )
        if real != self.real_root and not real.startswith(self.real_root + os.sep):
            log.warning("skipping %s: reached through a symbolic link (to %s)", job.rel, real)
            return True
        limit = self.config.resize.max_file_bytes
        if job.signature[0] > limit:
            self.fail(
                job,
                job.signature,
                f"too large: {job.signature[0]} bytes exceeds max_file_bytes {limit}",
            )
            return True
        return False

    def adopted(self, job: Job) -> bool:
        """A source with no record whose thumbnails are all there and newer than it (a lost
        database, a kill between rename and commit): record it done, render nothing."""
        found = recovery.own_thumbnails(
            self.config.paths.outgoing, job.rel, self.spec, job.path, self.siblings
        )
        if found is None:
            return False
        outputs, written = found
        others = self.state.outputs_near(plain_key(job.rel))
        if len(names.unowned(outputs, others)) < len(outputs):
            return False  # another source's row lists them: they are its thumbnails
        self.state.record_done(job.rel, job.signature, outputs, job.signature[0], written)
        log.info("kept %s: its %d thumbnails are already there", job.rel, len(outputs))
        self.downloads.on_rendered(job.rel)  # a manifest waiting for it need not wait on
        return True

    def dispatch(self) -> None:
        """Keep every worker busy plus one task each in hand, and no more: the rest wait here,
        where a shutdown can simply leave them on disk."""
        if self.unwritten:
            return  # outgoing/ is full: rendering more would only pile up in memory
        limit = self.pool.capacity()
        while self.ready and len(self.in_flight) < limit:
            job = self.ready.popleft()
            self.queued.discard(job.rel)
            self.submit(job)

    def submit(self, job: Job) -> None:
        if not self.in_flight:
            self.last_progress = time.monotonic()  # the pool's clock starts now
        future = self.pool.render(job.path, self.spec)
        self.in_flight[job.rel] = job
        future.add_done_callback(functools.partial(self._post_completed, job))

    def _post_completed(self, job: Job, future: Future[RenderResult]) -> None:
        self.inbox.put(Completed(job, future))  # runs on the pool's thread: post, nothing else

    def on_fetched(self, message: Fetched) -> None:
        """A downloader thread's outcome: the downloaded file is taken like any new image."""
        rel = self.downloads.on_fetched(message)
        if rel is not None and self.stop_reason is None:
            self.settler.touch(rel, time.monotonic(), closed=True)
            self.arrivals += 1

    # -- results ---------------------------------------------------------------------------

    def on_completed(self, job: Job, future: Future[RenderResult]) -> None:
        self.in_flight.pop(job.rel, None)
        self.last_progress = time.monotonic()
        try:
            result = future.result()
        except CancelledError:
            self.dropped += 1
            return  # shutting down: the source stays pending
        except WorkerCrashed as e:
            self.on_crash(job, str(e))
            return
        except TaskTimeout as e:
            self.fail(job, job.signature, str(e))
            return
        except MemoryError:
            self.fail(job, job.signature, self.memory_reason("out of memory"))
            return
        except Exception as e:
            log.error("rendering %s raised %r", job.rel, e, exc_info=e)
            self.fail(job, job.signature, f"internal error: {e}")
            return
        self.on_result(job, result)

    def on_crash(self, job: Job, reason: str) -> None:
        if self.stop_reason is not None:
            self.dropped += 1
            return  # stopped at shutdown: pending, not failed
        if job.attempt < CRASH_ATTEMPTS:
            log.warning("%s: %s; trying it once more", job.rel, reason)
            self.ready.appendleft(replace(job, attempt=job.attempt + 1))
            self.queued.add(job.rel)
        else:
            self.fail(job, job.signature, reason)

    def memory_reason(self, reason: str) -> str:
        limit = self.config.resize.max_memory_mb
        return f"{reason} (over [resize] max_memory_mb = {limit})" if limit else reason

    def on_result(self, job: Job, result: RenderResult) -> None:
        now_sig = signature(job.path)
        if now_sig is None:
            log.debug("%s disappeared before it was done; skipping it", job.rel)
            self.on_gone(job.rel)
            return
        if result.signature is None and now_sig == job.signature and result.error is not None:
            self.fail(job, now_sig, result.error)  # could not even open it (permissions)
            return
        if result.signature != job.signature or now_sig != result.signature:
            self.settler.touch(job.rel, time.monotonic(), closed=None)  # changed: settle again
            return
        if result.error is not None:
            reason = result.error
            if reason.startswith("out of memory"):
                reason = self.memory_reason(reason)
            self.fail(job, now_sig, reason)
        else:
            self.write(job, result)

    def write(self, job: Job, result: RenderResult) -> bool:
        near = self.state.outputs_near(plain_key(job.rel))  # its row and its same-stem siblings'
        own = near.pop(job.rel, ())
        labels, index = names.labels(result), result.index is not None
        try:
            chosen = names.choose(job.rel, labels, index, own, near)
        except names.NamesTaken as e:
            self.fail(job, job.signature, str(e))
            return True
        files = names.files(chosen, result)
        try:
            written = self.writer.write_all(files)
        except UnsafePath as e:
            self.fail(job, job.signature, f"unsafe output path: {e}")
            return True
        except OSError as e:
            if e.errno not in NO_SPACE:
                folder = self.writer.root / os.path.dirname(files[0][0])  # all in one folder
                self.fail(job, job.signature, f"cannot write thumbnail in {folder}: {e.strerror}")
                return True
            self.on_disk_full(job, result, e)
            return False
        if chosen.note is not None:
            log.info("%s", chosen.note, extra={"source": job.rel})
        self.remove_stale(own, chosen.all, near)
        assert result.signature is not None
        outputs = list(chosen.all)
        self.state.record_done(job.rel, result.signature, outputs, result.signature[0], written)
        self.stats.done += 1
        self.stats.bytes_in += result.signature[0]
        self.stats.bytes_out += written
        metrics.file_done(result.signature[0], written, result.cpu_seconds)
        log.info(
            "done %s: %d thumbnails in %.0f ms (render %.0f ms), %s -> %s",
            job.rel,
            len(result.thumbnails),
            (time.monotonic() - job.seen) * 1000,
            result.cpu_seconds * 1000,
            _size(result.signature[0]),
            _size(written),
            extra={"source": job.rel, "bytes_in": result.signature[0], "bytes_out": written},
        )
        self.downloads.on_rendered(job.rel)
        return True

    def remove_stale(
        self, own: tuple[str, ...], written: tuple[str, ...], near: dict[str, tuple[str, ...]]
    ) -> None:
        """Thumbnails an earlier version of this source had, this one does not, and no other
        source lists (a state from before sources of the same stem got names of their own)."""
        for old in names.unowned(set(own) - set(written), near):
            self.writer.remove(old)

    def fail(self, job: Job, sig: Signature, reason: str) -> None:
        if signature(job.path) is None:
            self.on_gone(job.rel)  # deleted while it hung or crashed: skipped, not failed
            return
        self.state.record_failed(job.rel, sig, reason, sig[0])
        self.stats.failed += 1
        metrics.file_failed(reason)
        log.warning("failed %s: %s", job.rel, reason, extra={"source": job.rel, "reason": reason})
        self.downloads.on_rendered(job.rel)

    # -- a full disk -----------------------------------------------------------------------

    def on_disk_full(self, job: Job, result: RenderResult, e: OSError) -> None:
        self.unwritten.append((job, result))
        now = time.monotonic()
        self.disk_full_until = now + DISK_FULL_RETRY
        if now - self.disk_full_logged >= 60:
            self.disk_full_logged = now
            log.error(
                "%s is full (%s): %d files wait to be written; retrying every %.0f s",
                self.config.paths.outgoing,
                errno.errorcode.get(e.errno or 0, e.errno),
                len(self.unwritten),
                DISK_FULL_RETRY,
            )

    def retry_unwritten(self) -> None:
        if not self.unwritten or time.monotonic() < self.disk_full_until:
            return
        while self.unwritten:
            job, result = self.unwritten.popleft()
            now_sig = signature(job.path)
            if now_sig is None:
                self.on_gone(job.rel)
                continue
            if now_sig != result.signature:
                self.settler.touch(job.rel, time.monotonic(), closed=None)
                continue
            if not self.write(job, result):
                self.unwritten.rotate(1)  # keep order: the one that failed goes first again
                return
        log.info("%s has room again; catching up", self.config.paths.outgoing)

    # -- scans and health ------------------------------------------------------------------

    def start_scan(self) -> None:
        if self.scan_thread is not None:
            self.rescan_wanted = True
            return
        self.scan_started = time.monotonic()
        self.next_rescan = self.scan_started + self.config.watch.rescan_interval
        self.scan_found = 0
        self.scan_thread = threading.Thread(target=self._scan, name="scanner", daemon=True)
        self.scan_thread.start()

    def rescan_soon(self, now: float) -> None:
        """Events were lost while a scan ran: scan again, but not back to back. In a sustained
        flood the queue overflows again and again; a pause as long as the last scan (at least
        RESCAN_GAP) keeps scans from taking the CPU the files need, and the next scan still
        starts after the last overflow."""
        if self.once:
            self.start_scan()
            return
        gap = max(RESCAN_GAP, now - self.scan_started)
        self.next_rescan = min(self.next_rescan, now + gap)

    def _scan(self) -> None:
        try:
            scanner.scan(
                self.root,
                self.config.state_db,
                self.config.watch.ignore,
                lambda rels, final: self.inbox.put(ScanBatch(rels, final)),
                self.scan_stop,
                gone=lambda rels: self.inbox.put(Gone(rels)),
                unlisted=lambda rel: self.inbox.put(Unlisted(rel)),
            )
        except Exception:
            log.exception("scan of %s failed", self.root)
            self.inbox.put(ScanBatch([], True))

    def housekeeping(self) -> None:
        if self.watcher is not None and not self.watcher.alive() and self.stop_reason is None:
            self.restart_observer()
        if not self.once and time.monotonic() >= self.next_rescan:
            if self.watcher is not None:
                self.watcher.check_limits()  # new folders may have reached the watch limit
            if self.stale_watches and self.watcher is not None:
                # Folders moved out of incoming/ took their watches along (watchdog keeps
                # them): a new observer watches only what is here. Then the rescan as usual.
                self.stale_watches = False
                log.info("folders were moved out of %s; renewing its watches", self.root)
                self.rewatch(moved=False)
            else:
                self.start_scan()
        self.retire_finished_pools()
        self.keep_state()
        self.monitor.tick(time.monotonic(), self.snapshot())
        self.take_retries()

    def take_retries(self) -> None:
        """`thumbd retry` cleared failure records: look at those sources again now.

        The command only writes to the database; SQLite's data_version tells this connection
        that another one committed, so no signal, pid file or restart is involved.
        """
        now = time.monotonic()
        if now < self.next_retry_check:
            return
        self.next_retry_check = now + RETRY_CHECK
        if not self.state.changed_elsewhere():
            return
        rels = self.state.take_retries()
        if rels:
            log.info("looking again at %d files (thumbd retry or redo)", len(rels))
            self.arrivals += len(rels)
        for rel in rels:
            if rel not in self.in_flight and rel not in self.queued:
                self.settler.found(rel, now)

    def idle(self) -> bool:
        busy = self.scan_thread or self.settler or self.ready or self.in_flight or self.unwritten
        return not busy and not self.downloads.busy()

    def state_failed(self) -> bool:
        state = State(self.config.state_db, readonly=True)
        try:
            return state.totals().failed > 0 or bool(state.url_failures())
        finally:
            state.close()

    # -- live operation: reload, health, live figures --------------------------------------

    def reload(self) -> None:
        """SIGHUP: read the configuration file again and apply it to new work. A broken file
        changes nothing; jobs in flight finish with the settings they started with."""
        self.monitor.reloading()
        logs.reopen()  # first, so that what the reload logs lands in the new file
        try:
            new = self._read_new_config()
        except (ConfigError, StartupError) as e:
            log.error("reload failed, keeping the current configuration: %s", e)
        else:
            self.apply(new)
        self.monitor.reloaded()

    def _read_new_config(self) -> Config:
        if self.config.source is None:
            return self.config  # built-in defaults: nothing to read again
        new = load_config(self.config.source)
        if new.paths.state != self.config.paths.state:
            log.warning(
                "%s: [paths] state changed to %s; that takes a restart (keeping %s)",
                new.source,
                new.paths.state,
                self.config.paths.state,
            )
            new = replace(new, paths=replace(new.paths, state=self.config.paths.state))
        _check_incoming(new.paths.incoming)
        # What apply() cannot undo half-way: a new outgoing/ or log file that cannot be made
        # fails the whole reload, and the daemon goes on as it was.
        if new.paths.outgoing != self.config.paths.outgoing:
            _prepare(Writer(new.paths.outgoing), new)
        if new.log.file and new.log.file != self.config.log.file:
            try:
                logs.probe(Path(new.log.file))
            except OSError as e:
                raise cannot(new, "[log] file", "open", e) from None
        if new.metrics != self.config.metrics and not self.once:
            self.replace_metrics_server(new)  # last: it is the one step with an effect
        return new

    def apply(self, new: Config) -> None:
        old, self.config = self.config, new
        changed = differences(old, new)
        if not changed:
            log.info("reloaded %s: nothing changed", new.source or "the built-in defaults")
            return
        self.spec = spec_from_config(new)
        self.settler.settle = new.watch.settle_seconds
        self.settler.quiet = new.watch.quiet_seconds
        if pool_settings(old) != pool_settings(new):
            self.replace_pool()
        if old.paths.outgoing != new.paths.outgoing:
            self.writer.cleanup()
            self.writer = Writer(new.paths.outgoing)
            self.writer.prepare()
        if old.paths.incoming != new.paths.incoming or old.watch.polling != new.watch.polling:
            self.rewatch(moved=old.paths.incoming != new.paths.incoming)
        self.downloads.reconfigure(new)
        if old.watch.rescan_interval != new.watch.rescan_interval:
            self.next_rescan = time.monotonic() + new.watch.rescan_interval
        if old.log != new.log:
            logs.configure(new.log)
        log.info(
            "reloaded %s: changed %s (%d in flight finish with the settings they started with)",
            new.source,
            ", ".join(changed),
            len(self.in_flight),
        )

    def replace_pool(self) -> None:
        """A new pool for new work; the old one finishes what it holds, then stops."""
        old = self.pool
        try:
            self.pool = self._make_pool()
        except StartupError as e:  # kind = "dask" without Dask installed
            log.error("cannot change the pool, keeping the current one: %s", e)
            return
        old.shutdown(wait=False)
        self.retired_pools.append(old)

    def retire_finished_pools(self) -> None:
        for pool in [p for p in self.retired_pools if not p.alive()]:
            pool.shutdown(wait=True)
            self.retired_restarts += pool.restarts()
            self.retired_pools.remove(pool)

    def pools(self) -> list[Pool]:
        return [self.pool, *self.retired_pools]

    def rewatch(self, *, moved: bool) -> None:
        """Watch the (new) incoming folder. Files tracked under the old one stay where they are."""
        if moved:
            self.root = str(self.config.paths.incoming)
            self.real_root = os.path.realpath(self.root)
            self.settler = Settler(self.root, self.settler.settle, self.settler.quiet)
            self.ready.clear()
            self.queued.clear()
        if self.watcher is None:
            return
        self.watcher.stop()
        self.watcher = Watcher(self.root, self.inbox, polling=self.config.watch.polling)
        try:
            self.watcher.start()
        except Exception as e:
            log.error("cannot watch %s: %s", self.root, e)  # housekeeping retries
        self.start_scan()

    def replace_metrics_server(self, new: Config) -> None:
        """Serve metrics where `new` says; if that address cannot be had, serve them where they
        were and raise StartupError (the reload fails). The old endpoint is closed first: the
        new one may want its port (127.0.0.1:9188 -> 0.0.0.0:9188)."""
        old = self.config.metrics.listen
        if self.metrics_server is not None:
            old = f"{old.rpartition(':')[0]}:{self.metrics_server.port}"  # the port 0 picked
            self.metrics_server.close()
            self.metrics_server = None
        try:
            self.metrics_server = self._serve_metrics(new.metrics.listen, new)
        except StartupError:
            try:
                self.metrics_server = self._serve_metrics(old)
            except StartupError as e:
                log.error("%s; the metrics endpoint is off", e)
            raise

    def restart_observer(self) -> None:
        """Restart a dead observer, backing off while it cannot start (incoming/ gone, say)."""
        assert self.watcher is not None
        now = time.monotonic()
        if now < self.observer_retry_at:
            return
        try:
            self.watcher.restart()
        except Exception as e:
            self.observer_backoff = min(max(1.0, 2 * self.observer_backoff), OBSERVER_RETRY_MAX)
            self.observer_retry_at = now + self.observer_backoff
            log.error(
                "cannot restart the observer on %s: %s; retrying in %.0f s",
                self.root,
                e,
                self.observer_backoff,
            )
            return
        self.observer_backoff = 0.0
        self.start_scan()

    def kill_observer(self) -> None:
        """Test hook (THUMBD_TEST_HOOKS=1, SIGUSR2): stop the observer thread as a crash would."""
        observer = self.watcher.observer if self.watcher is not None else None
        if observer is not None:
            log.warning("test hook: stopping the observer thread")
            observer.stop()
            observer.join(timeout=10)

    def health_problem(self) -> str | None:
        """Why the daemon cannot do its work right now, or None: what the watchdog ping means."""
        if self.watcher is not None and not self.watcher.alive():
            return "the observer thread is dead"
        if not self.pool.alive():
            return "the worker pool's supervisor thread is dead"
        if not self.in_flight:
            return None
        return self.pool.stuck(time.monotonic() - self.last_progress)

    def snapshot(self) -> Snapshot:
        s = self.stats
        return Snapshot(
            settling=len(self.settler),
            ready=len(self.ready),
            in_flight=len(self.in_flight),
            done=s.done,
            failed=s.failed,
            bytes_in=s.bytes_in,
            bytes_out=s.bytes_out,
            workers=self.pool.workers(),
            pool_restarts=self.retired_restarts + sum(p.restarts() for p in self.pools()),
            problem=self.health_problem(),
            waiting=self.pool.waiting(),
        )

    def _make_pool(self) -> Pool:
        try:
            return make_pool(self.config, once=self.once)
        except PoolUnavailable as e:
            raise StartupError(str(e)) from None

    def _serve_metrics(self, listen: str, config: Config | None = None) -> metrics.Server | None:
        try:
            return metrics.serve(listen)
        except OSError as e:
            where = (config or self.config).source or "the configuration"
            raise StartupError(
                f"{where}: [metrics] listen: cannot listen on {listen}: {e.strerror or e}"
            ) from None

    # -- start-up checks -------------------------------------------------------------------

    def _check_folders(self) -> None:
        _check_incoming(self.config.paths.incoming)

    def _take_lock(self) -> None:
        """One daemon per state folder: two would render and record everything twice."""
        try:
            self.lock.acquire()
        except pidfile.AlreadyRunning as e:
            raise StartupError(
                f"another thumbd (pid {e.pid or '?'}) is running on {self.config.paths.state}"
            ) from None

    def keep_state(self) -> None:
        """Someone removed or replaced files of the state folder under the running daemon: a
        database that is no longer the one open is opened (or rebuilt) again, like at a start,
        and a lock that is gone is made again, so that no second daemon can start on this
        state and `thumbd status` and `stop` still find this one."""
        now = time.monotonic()
        if now < self.next_state_check:
            return
        self.next_state_check = now + STATE_CHECK
        db = self.config.state_db
        if not self.state.is_open_at(db):
            log.warning("state database %s was removed or replaced; opening it again", db)
            self.state.commit()
            self.state.close()
            self.state = recovery.open_state(db, self.config.paths.outgoing)
            self.downloads.state = self.state
            self.start_scan()  # what the lost records said: thumbnails already there count
        try:
            if self.lock.keep():
                log.warning("%s was removed; made it again", self.lock.path)
        except (pidfile.AlreadyRunning, OSError) as e:
            log.error("cannot lock %s again: %s", self.lock.path, e)

    # -- progress for `once` on a terminal -------------------------------------------------

    def show_progress(self) -> None:
        if self.progress is None:
            return
        # Whatever left the pipeline counts, rendered or not (kept, unchanged, deleted).
        waiting = len(self.settler) + len(self.ready) + len(self.in_flight) + len(self.unwritten)
        s = self.stats
        total = max(self.arrivals, s.done + s.failed + waiting)
        if total:
            self.progress.show(f"thumbd: {total - waiting}/{total} ({s.failed} failed)")

    def _end_progress(self) -> None:
        if self.progress is not None:
            self.progress.end()


def cannot(config: Config, key: str, verb: str, e: OSError) -> StartupError:
    """A folder or file the configuration names cannot be made or used: say which, and why."""
    where = config.source or "the configuration"
    what = f" {e.filename}" if e.filename else ""
    return StartupError(f"{where}: {key}: cannot {verb}{what}: {e.strerror or e}")


def _prepare(writer: Writer, config: Config) -> None:
    try:
        writer.prepare()
    except OSError as e:
        raise cannot(config, "[paths] outgoing", "create", e) from None


def _check_owner(config: Config, command: str) -> None:
    """root on the folders of a service's user (`thumbd once` typed after installing as root)
    would leave a database and thumbnail folders there that the daemon, as that user, then
    cannot write: say whose they are instead. The state folder tells whose daemon it is; a
    root-owned one means root runs thumbd here (outgoing/ may then belong to anyone)."""
    if os.geteuid() != 0:
        return
    for folder in (config.paths.state, config.paths.outgoing):
        try:
            uid = folder.stat().st_uid
        except OSError:
            continue  # not there yet (made below), or made unreadable: the usual errors follow
        if uid == 0:
            return
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        raise StartupError(
            f"{folder} belongs to user {user}: run thumbd as that user "
            f"(runuser -u {user} -- thumbd {command} ...); files root made there would be "
            f"root's, and {user}'s daemon could not write them"
        )


def _check_incoming(incoming: Path) -> None:
    if not incoming.is_dir():
        raise StartupError(f"incoming folder {incoming} does not exist (or is not a folder)")
    if not os.access(incoming, os.R_OK | os.X_OK):
        raise StartupError(f"incoming folder {incoming} is not readable")


def _size(n: int) -> str:
    """Bytes for people: 812 B, 14.2 KB, 5.6 MB."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"
