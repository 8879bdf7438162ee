"""The daemon's lifecycle: signals, start-up, main loop, drain, shutdown, in that order, in
`Daemon.run()`.

One thread, the main loop, owns every piece of mutable state. The stages it asks hold it: the
tracker (sources between "needs a look" and the pool), watching (the observer and scans), the
dispatcher (the pool and what it holds), the publisher (writing and recording), the downloads
stage, and the housekeeping stages. Each says when it next needs the loop (`next_due`) and does
its periodic work in `tick(now)`. Everything else talks to the loop through one typed inbox
(service/messages.py), whose put is safe even from a signal handler. The filesystem is the
queue of record: a source counts as done only once its thumbnails are renamed into place and
the state says so.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from thumbd import testhooks
from thumbd.config import Config
from thumbd.downloads.stage import Downloads, Fetched
from thumbd.executors.factory import PoolFactory, PoolUnavailable, make_pool, sandbox_state
from thumbd.intake.retries import Retries
from thumbd.intake.settle import shown
from thumbd.intake.tracker import Tracker
from thumbd.intake.watcher import (
    DirArrived,
    DirChanged,
    DirGone,
    FsEvent,
    Moved,
    Overflow,
    Unlisted,
)
from thumbd.intake.watching import Watching
from thumbd.output.gallery import Gallery
from thumbd.output.publish import Publisher, size_text
from thumbd.output.writer import Writer
from thumbd.render.pipeline import spec_from_config
from thumbd.service import logs, metrics, pidfile, reload
from thumbd.service.dispatch import Dispatcher
from thumbd.service.health import StateKeeper
from thumbd.service.messages import Completed, Gone, Ignored, Message, ScanBatch, Signalled
from thumbd.service.monitor import Monitor, Snapshot
from thumbd.service.notify import Notifier
from thumbd.service.page import StatusPage
from thumbd.service.shared import Shared
from thumbd.service.startup import (
    STOP_MARGIN,
    StartupError,
    cannot,
    check_incoming,
    check_owner,
    prepare,
    take_lock,
)
from thumbd.store import recovery
from thumbd.store.state import State, damaged, is_damage
from thumbd.text import plural

__all__ = ["STOP_MARGIN", "Daemon", "StartupError", "cannot"]

log = logging.getLogger("thumbd")

# While files keep coming, their records share one commit this often: a commit per file costs
# the main thread more than writing the record. Once nothing is in flight, records are committed
# at once. A crash loses at most this stretch of records, never a thumbnail: those sources are
# simply rendered again.
COMMIT_EVERY = 0.25
# SQLite's answers that mean the state folder cannot take a record (full, read-only, failing):
# the daemon stops cleanly rather than go on rendering what it cannot record.
_CANNOT_RECORD = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}
)


class Stage(Protocol):
    def next_due(self) -> float | None: ...
    def tick(self, now: float) -> None: ...


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        once: bool = False,
        progress: logs.Progress | logs.PlainProgress | None = None,
        notifier: Notifier | None = None,
        pool_factory: PoolFactory = make_pool,
    ):
        """`pool_factory` is where renders run: the configured kind; tests give their own."""
        self.shared = shared = Shared(config, spec_from_config(config), queue.SimpleQueue(), once)
        self.progress = progress
        self.downloads = Downloads(config, shared.inbox.put)
        self.publisher = Publisher(shared, Writer(config.paths.outgoing), self.downloads)
        self.dispatcher = Dispatcher(shared, self.publisher, pool_factory)
        self.tracker = Tracker(shared, self.downloads, self.dispatcher, self.publisher)
        self.publisher.resettle = self.tracker.resettle
        self.watching = Watching(shared, self.tracker)
        self.lock = pidfile.StateLock(config.paths.state)
        self.keeper = StateKeeper(shared, self.lock)
        self.retries = Retries(shared, self.tracker)
        self.gallery = Gallery(shared, lambda: self.publisher.writer)
        self.publisher.changed = self.gallery.changed
        # In the order the loop runs them: what settled, what waits for room, then the pool.
        self.pipeline: tuple[Stage, ...] = (self.tracker, self.publisher, self.dispatcher)
        self.housekeeping: tuple[Stage, ...] = (
            self.watching,
            self.keeper,
            self.retries,
            self.gallery,
        )
        if notifier is None:
            notifier = Notifier(None) if once else Notifier.from_environment()
        self.monitor = Monitor(  # `once` too: status shows it
            notifier, config.paths.state, shared.stats.run.since, sandbox_state(config)
        )
        self.metrics_server: metrics.Server | None = None
        metrics.set_pages(StatusPage(lambda: self.shared.config).respond)  # on its address

    @property
    def config(self) -> Config:
        return self.shared.config

    @property
    def state(self) -> State:
        return self.shared.state

    # -- the lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Start up, work until told to stop (or, once, until nothing is left), drain, stop."""
        thread = threading.current_thread()
        named, thread.name = thread.name, "main"
        try:
            return self._run()
        finally:
            thread.name = named  # for a caller that goes on (tests run daemons in-process)

    def _run(self) -> int:
        with self.signals():
            self.startup()
            try:
                self.main_loop()
                self.drain()
            except sqlite3.DatabaseError as e:
                return self.database_error(e)
            finally:
                self.shutdown()
        return self.exit_code()

    def startup(self) -> None:
        config, once = self.config, self.shared.once
        check_incoming(config.paths.incoming)
        check_owner(config, "once" if once else "run")
        take_lock(self.lock, config)
        self.shared.open_state()
        recovery.after_reboot(self.state, config.paths.outgoing)
        self.state.take_retries()  # the start-up scan finds every source without a record
        prepare(self.publisher.writer, config)
        if not once:
            self.metrics_server = reload.serve_metrics(config.metrics.listen, config)
        self.downloads.start(self.state)
        try:
            self.dispatcher.start()
        except PoolUnavailable as e:
            raise StartupError(str(e)) from None
        self.watching.start()
        assert self.dispatcher.pool is not None
        log.info(
            "thumbd started: %s -> %s, widths %s, %s%s",
            self.tracker.root,
            config.paths.outgoing,
            ", ".join(map(str, config.thumbnails.widths)),
            self.dispatcher.pool.describe(),
            " (once)" if once else "",
        )
        self.monitor.ready(self.snapshot())

    def main_loop(self) -> None:
        while self.shared.stop_reason is None:
            message = self.next_message()
            self.state.begin()  # joins the batch still open from the last pass, if any
            if message is not None:
                self.handle(message)
            self.drain_inbox()
            now = time.monotonic()
            for stage in self.pipeline:
                stage.tick(now)
            self.commit_when_due()
            for stage in self.housekeeping:
                stage.tick(now)
            self.after_housekeeping()
            if self.shared.once and self.idle():
                self.shared.stop_reason = "done"
        self.state.commit()

    def drain(self) -> None:
        """Stop taking new work; let what is in flight finish within shutdown_timeout."""
        self.watching.stop()
        self.shared.stats.dropped += self.dispatcher.drop_ready()  # they stay pending
        self.dispatcher.stop_taking()
        self.downloads.stop_taking()
        timeout = self.config.daemon.shutdown_timeout
        deadline = time.monotonic() + timeout
        while (self.dispatcher.busy() or self.downloads.busy()) and time.monotonic() < deadline:
            try:
                message = self.shared.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(message, Completed | Fetched):
                with self.state.transaction():
                    self.handle(message)
        if self.downloads.busy():
            log.warning(
                "%s still running after %.0f s; cancelling them (they stay pending)",
                plural(self.downloads.in_flight(), "download"),
                timeout,
            )
        self.downloads.cancel()  # a cancelled download leaves no file under a final name
        if self.dispatcher.busy():
            self.dispatcher.terminate()

    def shutdown(self) -> None:
        self.watching.join()
        self.dispatcher.join()
        self.downloads.stop()
        if self.metrics_server is not None:
            self.metrics_server.close()
        metrics.set_pages(None)
        self.monitor.close()
        self.gallery.flush()
        self.publisher.writer.cleanup()
        left = (
            len(self.tracker)  # settling, and copies waiting for their twins
            + len(self.dispatcher.in_flight)
            + len(self.publisher.unwritten)
            + self.shared.stats.dropped
        )
        self.state.close()
        if self.progress is not None:
            self.progress.end()
        _summary(self.shared, left, self.downloads.bytes_downloaded)

    def exit_code(self) -> int:
        if not self.shared.once:
            return 0
        unlisted = self.tracker.unlisted
        if unlisted:  # their images were never seen: not all done
            log.warning(
                "not done: images in folders that could not be read (permissions?): %s",
                ", ".join(shown(rel) for rel in sorted(unlisted)),
            )
        if self.shared.stop_reason != "done":  # a signal: what is left stays pending
            log.warning(
                "not done: stopped by %s before the end; thumbd once again takes up the rest",
                self.shared.stop_reason,
            )
            return 1
        return 1 if unlisted or _any_failed(self.config) else 0

    def database_error(self, e: sqlite3.DatabaseError) -> int:
        """Stop on a state database that is damaged or cannot be written; a bug raises."""
        self.shared.stop_reason = _database_stop(self.config, e)
        return 1

    # -- signals ---------------------------------------------------------------------------

    @contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT ask for a drain; a second one exits at once. SIGHUP asks for a reload.
        Restores the old handlers."""
        got: list[int] = []

        def handler(signum: int, frame: object) -> None:
            if got:
                os.write(2, b"thumbd: second signal, exiting now\n")
                self.dispatcher.kill()  # a hung worker would outlive the daemon for ever
                os._exit(128 + signum)
            got.append(signum)
            self.shared.inbox.put(Signalled(signum))

        def post(signum: int, frame: object) -> None:
            self.shared.inbox.put(Signalled(signum))

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, post)
        if testhooks.hooks_enabled():  # tests only: SIGUSR2 stops the observer
            old[signal.SIGUSR2] = signal.signal(signal.SIGUSR2, post)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            reload.reload(self)
        elif signum == signal.SIGUSR2:
            self.watching.kill_observer()
        else:
            self.shared.stop_reason = signal.Signals(signum).name
            # systemd's TimeoutStopSec= must not cut the drain short: ask for what it may take.
            self.monitor.stopping(self.config.daemon.shutdown_timeout + STOP_MARGIN)
            in_flight = len(self.dispatcher.in_flight)
            log.info("%s: draining (%d in flight)", self.shared.stop_reason, in_flight)

    # -- messages --------------------------------------------------------------------------

    def next_message(self) -> Message | None:
        try:
            return self.shared.inbox.get(timeout=self.wait_time())
        except queue.Empty:
            return None

    def wait_time(self) -> float:
        """Until the first stage needs the loop (a second at most: health is looked at)."""
        now = time.monotonic()
        dues = [stage.next_due() for stage in (*self.pipeline, *self.housekeeping)]
        dues.append(self.monitor.due())
        uncommitted = self.state.open_for()
        if uncommitted is not None and (not self.dispatcher.busy() or uncommitted >= COMMIT_EVERY):
            dues.append(now + COMMIT_EVERY - uncommitted)
        due = min((d for d in dues if d is not None), default=now + 1.0)
        return min(1.0, max(0.0, due - now))

    def commit_when_due(self) -> None:
        uncommitted = self.state.open_for()
        if uncommitted is not None and (not self.dispatcher.busy() or uncommitted >= COMMIT_EVERY):
            self.state.commit()

    def drain_inbox(self) -> None:
        for _ in range(10_000):
            try:
                message = self.shared.inbox.get_nowait()
            except queue.Empty:
                return
            self.handle(message)

    def handle(self, message: Message) -> None:
        match message:
            case FsEvent() | Moved():
                self.tracker.on_event(message)
            case Completed():
                self.dispatcher.on_completed(message)
            case Fetched():
                self.on_fetched(message)
            case ScanBatch():
                self.watching.on_scan(message)
            case Gone(rels=rels):
                self.watching.on_gone(rels)
            case DirArrived(rel=rel):
                self.tracker.on_dir(rel)
            case DirGone(rel=rel):
                self.watching.on_dir_gone()
                self.tracker.gone_dir(rel)
            case Unlisted(rel=rel):
                self.tracker.unlisted.add(rel)
            case DirChanged(rel=rel):
                self.watching.on_dir_changed(rel)
            case Overflow():
                self.watching.on_overflow()
            case Ignored(counts=counts):
                self.tracker.passed_over(counts)
            case Signalled(signum=signum):
                self.on_signal(signum)

    def on_fetched(self, message: Fetched) -> None:
        """A download's outcome: the downloaded file is taken like any new image."""
        rel = self.downloads.on_fetched(message)
        if rel is not None and not self.shared.stopping:
            self.tracker.arrived(rel)

    # -- health and live figures -----------------------------------------------------------

    def after_housekeeping(self) -> None:
        if self.keeper.reopened:  # what the lost records said: thumbnails already there count
            self.keeper.reopened = False
            self.downloads.state = self.state
            self.watching.start_scan()
        self.monitor.tick(time.monotonic(), self.snapshot())
        self.show_progress()

    def idle(self) -> bool:
        stages = (self.watching, self.tracker, self.dispatcher, self.publisher, self.downloads)
        return not any(stage.busy() for stage in stages)

    def health_problem(self) -> str | None:
        """Why the daemon cannot do its work right now, or None: what the watchdog ping means."""
        if not self.watching.alive():
            return "the observer thread is dead"
        return self.dispatcher.problem()

    def snapshot(self) -> Snapshot:
        s, pool = self.shared.stats, self.dispatcher.pool
        return Snapshot(
            settling=len(self.tracker),  # and copies waiting for their twins
            ready=self.dispatcher.ready(),
            in_flight=len(self.dispatcher.in_flight),
            done=s.done,
            failed=s.failed,
            finished=s.finished,
            bytes_in=s.bytes_in,
            bytes_out=s.bytes_out,
            workers=pool.workers() if pool is not None else 0,
            pool_restarts=self.dispatcher.restarts(),
            problem=self.health_problem(),
            waiting=pool.waiting() if pool is not None else None,
            **{"moved": s.moved, "reused": s.reused, "hashed": self.tracker.reuse.hashed},
        )

    def show_progress(self) -> None:
        """`once` on a terminal: whatever left the pipeline counts, rendered or not (kept,
        unchanged, deleted)."""
        if self.progress is None:
            return
        d = self.dispatcher
        waiting = len(self.tracker) + d.ready() + len(d.in_flight) + len(self.publisher.unwritten)
        s = self.shared.stats
        total = max(self.tracker.arrivals, s.finished + waiting)
        self.progress.update(total - waiting, total, s.failed)


def _summary(shared: Shared, left: int, downloaded: int) -> None:
    """The last log line: what this run did."""
    s = shared.stats
    log.info(
        "stopped (%s) ◆ %d done ◆ %d failed ◆ %d left ◆ %sread %s, wrote %s in %.1f s",
        shared.stop_reason,
        s.done,
        s.failed,
        left,
        f"downloaded {size_text(downloaded)}, " if downloaded else "",
        size_text(s.bytes_in),
        size_text(s.bytes_out),
        time.monotonic() - s.started,
    )


def _any_failed(config: Config) -> bool:
    """Whether the state records a failure, this run's or an earlier one's (`once` exits 1)."""
    state = State(config.state_db, readonly=True)
    try:
        return state.totals().failed > 0 or bool(state.url_failures())
    finally:
        state.close()


def _database_stop(config: Config, e: sqlite3.DatabaseError) -> str:
    """Why the daemon stops for `e`, logged; raises `e` again when it is a bug."""
    if is_damage(e):
        log.error("%s; stopping", damaged(config.state_db, e))
        return "the state database is damaged"
    if getattr(e, "sqlite_errorcode", 0) & 0xFF not in _CANNOT_RECORD:
        raise e  # a bug: keep the traceback
    # The state database cannot be written (its disk is full, say). Stop: the records of the
    # last moments are rolled back, and their thumbnails, already in place, are recorded by the
    # next start without rendering (recovery.own_thumbnails).
    log.error(
        "cannot record in %s: %s; stopping. Make room there (or fix it) and start thumbd "
        "again: the thumbnails already written stay and nothing is rendered twice",
        config.state_db,
        e,
    )
    return "the state database cannot be written"
