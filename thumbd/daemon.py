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
import fcntl
import functools
import logging
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from thumbd import recovery, scanner
from thumbd.config import Config
from thumbd.executor import ProcessPool, TaskTimeout, WorkerCrashed
from thumbd.intake import Settler, classify, signature
from thumbd.output import NO_SPACE, UnsafePath, Writer, thumbnail_name
from thumbd.render import RenderResult, RenderSpec, Signature, render
from thumbd.state import State
from thumbd.watcher import DirArrived, FsEvent, Overflow, Watcher
from thumbd.worker import init_worker

log = logging.getLogger("thumbd")

CRASH_ATTEMPTS = 2  # a source that kills its worker this many times is recorded as failed
DISK_FULL_RETRY = 5.0  # seconds between tries to write while outgoing/ is full
RETRY_CHECK = 0.5  # seconds between looks for `thumbd retry` requests


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
    def __init__(self, config: Config, *, once: bool = False, progress: TextIO | None = None):
        self.config = config
        self.once = once
        self.progress = progress
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.root = str(config.paths.incoming)
        self.real_root = os.path.realpath(self.root)
        self.real_dirs: dict[str, str] = {}
        self.spec = RenderSpec(
            widths=config.thumbnails.widths,
            quality=config.thumbnails.quality,
            max_pixels=config.resize.max_pixels,
        )
        self.settler = Settler(self.root, config.watch.settle_seconds, config.watch.quiet_seconds)
        self.writer = Writer(config.paths.outgoing)
        self.ready: deque[Job] = deque()
        self.queued: set[str] = set()
        self.in_flight: dict[str, Job] = {}
        self.unwritten: deque[tuple[Job, RenderResult]] = deque()
        self.stats = Stats()
        self.stop_reason: str | None = None
        self.scan_stop = threading.Event()
        self.scan_thread: threading.Thread | None = None
        self.rescan_wanted = False
        self.scan_total = 0
        self.scan_found = 0
        self.next_rescan = 0.0
        self.disk_full_until = 0.0
        self.disk_full_logged = 0.0
        self.next_retry_check = 0.0
        self._lock_fd: int | None = None
        self.state: State
        self.pool: ProcessPool
        self.watcher: Watcher | None = None

    # -- the lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Start up, work until told to stop (or, once, until nothing is left), drain, stop."""
        threading.current_thread().name = "main"
        with self.signals():
            self.startup()
            try:
                self.main_loop()
                self.drain()
            finally:
                self.shutdown()
        return 1 if self.once and self.state_failed() else 0

    def startup(self) -> None:
        self._check_folders()
        self._take_lock()
        self.state = recovery.open_state(self.config.state_db, self.config.paths.outgoing)
        self.state.take_retries()  # the start-up scan finds every source without a record
        self.writer.prepare()
        self.pool = ProcessPool(
            self.config.resize.workers,
            max_tasks_per_child=self.config.resize.max_tasks_per_child,
            timeout=self.config.resize.timeout,
            initializer=init_worker,
            initargs=(self.config.resize.max_memory_mb * 2**20, self.config.resize.max_pixels),
        )
        if not self.once:
            self.watcher = Watcher(self.root, self.inbox, polling=self.config.watch.polling)
            self.watcher.start()
        self.start_scan()
        log.info(
            "thumbd started: %s -> %s, widths %s, %d workers%s",
            self.root,
            self.config.paths.outgoing,
            ", ".join(map(str, self.config.thumbnails.widths)),
            self.config.resize.workers,
            " (once)" if self.once else "",
        )

    def main_loop(self) -> None:
        while self.stop_reason is None:
            self.handle(self.next_message())
            with self.state.transaction():
                self.drain_inbox()
                self.take_ready()
                self.retry_unwritten()
                self.dispatch()
            self.housekeeping()
            if self.once and self.idle():
                self.stop_reason = "done"

    def drain(self) -> None:
        """Stop taking new work; let what is in flight finish within shutdown_timeout."""
        if self.watcher is not None:
            self.watcher.stop()
        self.scan_stop.set()
        self.ready.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + self.config.daemon.shutdown_timeout
        while self.in_flight and time.monotonic() < deadline:
            try:
                message = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(message, Completed):
                with self.state.transaction():
                    self.handle(message)
        if self.in_flight:
            log.warning(
                "%d jobs still running after %.0f s; stopping them (they stay pending)",
                len(self.in_flight),
                self.config.daemon.shutdown_timeout,
            )
            self.pool.terminate()

    def shutdown(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.scan_stop.set()
        if self.scan_thread is not None:
            self.scan_thread.join()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.writer.cleanup()
        left = len(self.settler) + len(self.ready) + len(self.in_flight) + len(self.unwritten)
        self.state.close()
        self._end_progress()
        s = self.stats
        log.info(
            "stopped (%s) ◆ %d done ◆ %d failed ◆ %d left ◆ read %s, wrote %s in %.1f s",
            self.stop_reason,
            s.done,
            s.failed,
            left,
            _size(s.bytes_in),
            _size(s.bytes_out),
            time.monotonic() - s.started,
        )

    # -- signals ---------------------------------------------------------------------------

    @contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT ask for a drain; a second one exits at once. Restores the old ones."""
        got: list[int] = []

        def handler(signum: int, frame: object) -> None:
            if got:
                os.write(2, b"thumbd: second signal, exiting now\n")
                os._exit(128 + signum)
            got.append(signum)
            self.inbox.put(Signalled(signum))

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
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
        if self.unwritten:
            wait = min(wait, max(0.0, self.disk_full_until - now))
        return wait

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
        elif isinstance(message, ScanBatch):
            self.on_scan(message)
        elif isinstance(message, Gone):
            self.on_scan_gone(message.rels)
        elif isinstance(message, DirArrived):
            self.on_dir(message.rel)
        elif isinstance(message, Overflow):
            log.warning("inotify queue overflowed: events were lost; rescanning %s", self.root)
            self.start_scan()
        elif isinstance(message, Signalled):
            self.stop_reason = signal.Signals(message.signum).name
            log.info("%s: draining (%d in flight)", self.stop_reason, len(self.in_flight))

    def on_event(self, e: FsEvent) -> None:
        if e.deleted:
            self.settler.discard(e.rel)
            if e.rel not in self.in_flight:  # else its result finds it gone
                self.on_gone(e.rel)
            return
        if classify(e.rel, self.config.watch.ignore) is not None:
            self.settler.touch(e.rel, time.monotonic(), closed=e.closed)

    def on_dir(self, rel: str) -> None:
        """A folder moved in from outside: its files are complete as they are."""
        now = time.monotonic()
        for sub, _ in scanner.walk(os.path.join(self.root, rel), self.config.watch.ignore):
            self.settler.touch(f"{rel}/{sub}", now, closed=True)

    def on_scan(self, batch: ScanBatch) -> None:
        now = time.monotonic()
        for rel in batch.rels:
            if rel not in self.in_flight and rel not in self.queued:
                self.settler.found(rel, now)
        self.scan_total += len(batch.rels)
        self.scan_found += len(batch.rels)
        if batch.final:
            log.info("scan of %s: %d to look at", self.root, self.scan_found)
            self.scan_thread = None
            if self.rescan_wanted:
                self.rescan_wanted = False
                self.start_scan()

    # -- deleted sources -------------------------------------------------------------------

    def on_gone(self, rel: str, *, log_each: bool = True) -> bool:
        """A source is gone: forget its record; `[thumbnails] on_delete` says what happens to
        its thumbnails. A source never processed has no record: nothing to say."""
        record = self.state.forget(rel)
        if record is None:
            return False
        remove = self.config.thumbnails.on_delete == "remove"
        if remove:
            for name in record.outputs:
                self.writer.remove(name, prune=True)
        if log_each:
            what = "removed its thumbnails" if remove else "its thumbnails stay"
            log.info("removed %s: forgetting it (%s)", rel, what)
        return True

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
        found = recovery.existing_thumbnails(
            self.config.paths.outgoing, job.rel, self.config.thumbnails.widths, job.path
        )
        if found is None:
            return False
        names, written = found
        self.state.record_done(job.rel, job.signature, names, job.signature[0], written)
        log.info("kept %s: its %d thumbnails are already there", job.rel, len(names))
        return True

    def dispatch(self) -> None:
        """Keep every worker busy plus one task each in hand, and no more: the rest wait here,
        where a shutdown can simply leave them on disk."""
        if self.unwritten:
            return  # outgoing/ is full: rendering more would only pile up in memory
        limit = self.config.resize.workers * 2
        while self.ready and len(self.in_flight) < limit:
            job = self.ready.popleft()
            self.queued.discard(job.rel)
            self.submit(job)

    def submit(self, job: Job) -> None:
        future = self.pool.submit(render, job.path, self.spec)
        self.in_flight[job.rel] = job
        future.add_done_callback(functools.partial(self._post_completed, job))

    def _post_completed(self, job: Job, future: Future[RenderResult]) -> None:
        self.inbox.put(Completed(job, future))  # runs on the pool's thread: post, nothing else

    # -- results ---------------------------------------------------------------------------

    def on_completed(self, job: Job, future: Future[RenderResult]) -> None:
        self.in_flight.pop(job.rel, None)
        try:
            result = future.result()
        except CancelledError:
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
        names = [thumbnail_name(job.rel, t.width, t.ext) for t in result.thumbnails]
        try:
            written = self.writer.write_all(
                [(n, t.data) for n, t in zip(names, result.thumbnails, strict=True)]
            )
        except UnsafePath as e:
            self.fail(job, job.signature, f"unsafe output path: {e}")
            return True
        except OSError as e:
            if e.errno not in NO_SPACE:
                self.fail(job, job.signature, f"cannot write thumbnail: {e.strerror}")
                return True
            self.on_disk_full(job, result, e)
            return False
        self.remove_stale(job.rel, names)
        assert result.signature is not None
        self.state.record_done(job.rel, result.signature, names, result.signature[0], written)
        self.stats.done += 1
        self.stats.bytes_in += result.signature[0]
        self.stats.bytes_out += written
        log.info(
            "done %s: %d thumbnails in %.0f ms (render %.0f ms), %s -> %s",
            job.rel,
            len(names),
            (time.monotonic() - job.seen) * 1000,
            result.cpu_seconds * 1000,
            _size(result.signature[0]),
            _size(written),
        )
        self.show_progress()
        return True

    def remove_stale(self, rel: str, names: list[str]) -> None:
        """Thumbnails an earlier version of this source had and this one does not."""
        record = self.state.get(rel)
        if record is not None:
            for old in set(record.outputs) - set(names):
                self.writer.remove(old)

    def fail(self, job: Job, sig: Signature, reason: str) -> None:
        if signature(job.path) is None:
            self.on_gone(job.rel)  # deleted while it hung or crashed: skipped, not failed
            return
        self.state.record_failed(job.rel, sig, reason, sig[0])
        self.stats.failed += 1
        log.warning("failed %s: %s", job.rel, reason)
        self.show_progress()

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
        self.next_rescan = time.monotonic() + self.config.watch.rescan_interval
        self.scan_found = 0
        self.scan_thread = threading.Thread(target=self._scan, name="scanner", daemon=True)
        self.scan_thread.start()

    def _scan(self) -> None:
        try:
            scanner.scan(
                self.root,
                self.config.state_db,
                self.config.watch.ignore,
                lambda rels, final: self.inbox.put(ScanBatch(rels, final)),
                self.scan_stop,
                gone=lambda rels: self.inbox.put(Gone(rels)),
            )
        except Exception:
            log.exception("scan of %s failed", self.root)
            self.inbox.put(ScanBatch([], True))

    def housekeeping(self) -> None:
        if self.watcher is not None and not self.watcher.alive() and self.stop_reason is None:
            self.watcher.restart()
            self.start_scan()
        if not self.once and time.monotonic() >= self.next_rescan:
            if self.watcher is not None:
                self.watcher.check_limits()  # new folders may have reached the watch limit
            self.start_scan()
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
            log.info("retry requested for %d failed files", len(rels))
        for rel in rels:
            if rel not in self.in_flight and rel not in self.queued:
                self.settler.found(rel, now)

    def idle(self) -> bool:
        return not (
            self.scan_thread or self.settler or self.ready or self.in_flight or self.unwritten
        )

    def state_failed(self) -> bool:
        state = State(self.config.state_db, readonly=True)
        try:
            return state.totals().failed > 0
        finally:
            state.close()

    # -- start-up checks -------------------------------------------------------------------

    def _check_folders(self) -> None:
        incoming = self.config.paths.incoming
        if not incoming.is_dir():
            raise StartupError(f"incoming folder {incoming} does not exist (or is not a folder)")
        if not os.access(incoming, os.R_OK | os.X_OK):
            raise StartupError(f"incoming folder {incoming} is not readable")

    def _take_lock(self) -> None:
        """One daemon per state folder: two would render and record everything twice."""
        self.config.paths.state.mkdir(parents=True, exist_ok=True)
        path = self.config.paths.state / "daemon.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise StartupError(
                f"another thumbd (pid {other or '?'}) is running on {self.config.paths.state}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    # -- progress for `once` on a terminal -------------------------------------------------

    def show_progress(self) -> None:
        if self.progress is None:
            return
        s = self.stats
        total = max(self.scan_total, s.done + s.failed)
        self.progress.write(f"\rthumbd: {s.done + s.failed}/{total} ({s.failed} failed)")
        self.progress.flush()

    def _end_progress(self) -> None:
        if self.progress is not None:
            self.progress.write("\n")


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
