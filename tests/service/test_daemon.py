"""The real Daemon in-process, with a pool of our own that implements the Pool protocol.

Real folders, a real watchdog observer, the real SQLite state, real signals; only where renders
run is replaced: `ScriptedPool` renders in a thread of this process with the real render(), and
does what a file's name asks: `crash` kills the worker under it (every time, or `crash1` only on
the first try), `hang` waits until the test releases it, `oom` runs out of memory.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import wait_until
from thumbd.config import Config, load_config
from thumbd.downloads.stage import Downloads
from thumbd.executors.base import Pool, TaskTimeout, WorkerCrashed
from thumbd.intake.watcher import FsEvent
from thumbd.output.publish import Publisher
from thumbd.output.writer import Writer
from thumbd.render.pipeline import render, spec_from_config
from thumbd.render.spec import RenderResult, RenderSpec
from thumbd.service.daemon import Daemon
from thumbd.service.dispatch import Dispatcher
from thumbd.service.messages import Job
from thumbd.service.shared import Shared
from thumbd.store.state import State


class ScriptedPool:
    """A Pool whose tasks obey their file names; counts what it was asked to do."""

    def __init__(self) -> None:
        self.gate = threading.Event()  # cleared: every render waits until the test opens it
        self.gate.set()
        self.release = threading.Event()
        self.started: list[str] = []
        self.hung: list[str] = []
        self.terminated = False
        self.lock = threading.Lock()

    def render(self, path: str, spec: RenderSpec, *, urgent: bool = False) -> Future[RenderResult]:
        future: Future[RenderResult] = Future()
        name = os.path.basename(path)
        with self.lock:
            tries = self.started.count(name)
            self.started.append(name)
        threading.Thread(target=self._run, args=(future, path, name, tries, spec)).start()
        return future

    def _run(
        self, future: Future[RenderResult], path: str, name: str, tries: int, spec: RenderSpec
    ) -> None:
        if not future.set_running_or_notify_cancel():
            return
        self.gate.wait(30)
        if (name.startswith("crash1") and tries == 0) or name.startswith("crash_"):
            future.set_exception(WorkerCrashed("worker crashed (killed by signal 9)"))
        elif name.startswith("oom"):
            future.set_exception(MemoryError())
        elif name.startswith("slow"):
            future.set_exception(TaskTimeout("timed out after 1 s"))
        elif name.startswith("hang"):
            self.hung.append(name)
            if self.release.wait(30) and not self.terminated:
                future.set_result(render(path, spec))
            else:
                future.set_exception(WorkerCrashed("terminated"))
        else:
            future.set_result(render(path, spec))

    def capacity(self) -> int:
        return 4

    def describe(self) -> str:
        return "scripted"

    def workers(self) -> int:
        return 1

    def restarts(self) -> int:
        return 0

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass

    def terminate(self) -> None:
        self.terminated = True
        self.release.set()

    def kill(self) -> None:
        self.terminate()

    def alive(self) -> bool:
        return True

    def waiting(self) -> str | None:
        return None

    def stuck(self, quiet: float) -> str | None:
        return None


def _conforms(pool: Pool) -> Pool:
    return pool  # mypy checks that ScriptedPool implements the protocol


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    incoming, outgoing = tmp_path / "incoming", tmp_path / "outgoing"
    incoming.mkdir()
    cfg = tmp_path / "thumbd.toml"
    cfg.write_text(
        '[paths]\nincoming = "incoming"\noutgoing = "outgoing"\nstate = "state"\n'
        "[watch]\nsettle_seconds = 0.05\nquiet_seconds = 0.3\n"
        "[daemon]\nshutdown_timeout = 5\n[resize]\nmax_memory_mb = 512\n"
    )
    yield incoming, outgoing, cfg


def photo(path: Path, size: tuple[int, int] = (400, 300)) -> Path:
    """A JPEG with its path after the image's end: each its own source (copies of one file
    would wait for one render and share its thumbnails, output/reuse.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 40)).save(path, quality=90)
    with path.open("ab") as f:
        f.write(str(path).encode())
    return path


def make(cfg: Path, *, once: bool) -> tuple[Daemon, ScriptedPool]:
    pool = ScriptedPool()
    config: Config = load_config(cfg)
    daemon = Daemon(config, once=once, pool_factory=lambda c, o: _conforms(pool))
    return daemon, pool


def records(cfg: Path) -> dict[str, tuple[str, str | None]]:
    """What the state database says, read as `thumbd status` reads it (nothing before the
    daemon has made it)."""
    db = load_config(cfg).state_db
    if not db.exists():
        return {}
    state = State(db, readonly=True)
    try:
        reasons = {r.path: r.reason for r in state.failures()}
        return {
            path: (status, reasons.get(path)) for path, (_, status) in state.signatures().items()
        }
    finally:
        state.close()


def drive(daemon: Daemon, scenario: Callable[[], None]) -> int:
    """run() on this (the main) thread, as the CLI does; `scenario` on another thread. The
    scenario ends by SIGTERM to this process, on success or failure, unless it sent one
    itself (a second would make the daemon exit at once, with this process) or run() has
    already returned (the default handler would end this process)."""
    errors: list[BaseException] = []
    lock = threading.Lock()
    running = [True]
    default = signal.getsignal(signal.SIGTERM)

    def go() -> None:
        try:  # from when run() has its handlers in place: before that, SIGTERM ends us
            wait_until(lambda: signal.getsignal(signal.SIGTERM) is not default, 10, "run()")
            scenario()
        except BaseException as e:  # reported below, on the test's own thread
            errors.append(e)
        finally:
            with lock:
                handled = signal.getsignal(signal.SIGTERM) is not default
                if running[0] and handled and daemon.shared.stop_reason is None:
                    os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=go)
    thread.start()
    try:
        code = daemon.run()
    finally:
        with lock:
            running[0] = False
        thread.join()
    if errors:
        raise errors[0]
    return code


def test_once_renders_publishes_and_records(folders: tuple[Path, Path, Path]) -> None:
    incoming, outgoing, cfg = folders
    photo(incoming / "a.jpg")
    photo(incoming / "sub" / "b.jpg", (300, 600))
    daemon, pool = make(cfg, once=True)
    assert daemon.run() == 0
    assert sorted(pool.started) == ["a.jpg", "b.jpg"]
    for w in (200, 64, 32):
        assert Image.open(outgoing / f"a_{w}.jpg").width == w
        assert Image.open(outgoing / "sub" / f"b_{w}.jpg").width == w
    assert records(cfg) == {"a.jpg": ("done", None), "sub/b.jpg": ("done", None)}
    assert (daemon.shared.stats.done, daemon.shared.stats.failed) == (2, 0)


def test_failures_are_values_with_a_kind(folders: tuple[Path, Path, Path]) -> None:
    incoming, outgoing, cfg = folders
    photo(incoming / "oom.jpg")
    photo(incoming / "slow.jpg")
    (incoming / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg at all")
    daemon, _ = make(cfg, once=True)
    assert daemon.run() == 1  # `once` exits 1 when something failed
    got = records(cfg)
    assert got["oom.jpg"] == ("failed", "out of memory (over [resize] max_memory_mb = 512)")
    assert got["slow.jpg"] == ("failed", "timed out after 1 s")
    status, reason = got["broken.jpg"]
    assert status == "failed" and reason is not None and reason.startswith("cannot identify")
    assert not list(outgoing.rglob("*.jpg"))


def test_a_crash_is_tried_once_more_then_failed(folders: tuple[Path, Path, Path]) -> None:
    incoming, outgoing, cfg = folders
    photo(incoming / "crash1.jpg")  # crashes on its first try only
    photo(incoming / "crash_always.jpg")
    daemon, pool = make(cfg, once=True)
    assert daemon.run() == 1
    assert pool.started.count("crash1.jpg") == 2
    assert pool.started.count("crash_always.jpg") == 2  # CRASH_ATTEMPTS, no more
    got = records(cfg)
    assert got["crash1.jpg"] == ("done", None)
    assert got["crash_always.jpg"] == ("failed", "worker crashed (killed by signal 9)")
    assert (outgoing / "crash1_200.jpg").exists()


def test_watch_then_sigterm_drains_work_in_flight(folders: tuple[Path, Path, Path]) -> None:
    incoming, outgoing, cfg = folders
    daemon, pool = make(cfg, once=False)

    def scenario() -> None:
        photo(incoming / "new.jpg")  # through the real observer
        wait_until(lambda: (outgoing / "new_200.jpg").exists(), 10, "new.jpg's thumbnails")
        photo(incoming / "hang.jpg")
        wait_until(lambda: pool.hung, 10, "the hung render to start")
        os.kill(os.getpid(), signal.SIGTERM)  # the drain starts with hang.jpg in flight
        wait_until(lambda: daemon.shared.stop_reason == "SIGTERM", 10, "the drain")
        pool.release.set()

    code = drive(daemon, scenario)
    assert code == 0
    assert records(cfg) == {"new.jpg": ("done", None), "hang.jpg": ("done", None)}
    assert (outgoing / "hang_200.jpg").exists()
    assert not pool.terminated


def test_a_drain_that_times_out_leaves_the_source_pending(
    folders: tuple[Path, Path, Path],
) -> None:
    incoming, outgoing, cfg = folders
    cfg.write_text(cfg.read_text().replace("shutdown_timeout = 5", "shutdown_timeout = 0.5"))
    daemon, pool = make(cfg, once=False)

    def scenario() -> None:
        photo(incoming / "hang.jpg")
        wait_until(lambda: pool.hung, 10, "the hung render to start")

    drive(daemon, scenario)
    assert pool.terminated  # the drain ran out of time and stopped the pool
    assert records(cfg) == {}  # not failed: pending, for the next start
    assert not (outgoing / "hang_200.jpg").exists()


def test_a_deleted_source_is_forgotten_and_a_changed_one_rendered_again(
    folders: tuple[Path, Path, Path],
) -> None:
    incoming, outgoing, cfg = folders
    daemon, pool = make(cfg, once=False)

    def scenario() -> None:
        a = photo(incoming / "a.jpg")
        wait_until(lambda: "a.jpg" in records(cfg), 10, "a.jpg's record")
        a.unlink()
        wait_until(lambda: "a.jpg" not in records(cfg), 10, "a.jpg forgotten")
        b = photo(incoming / "b.jpg")
        wait_until(lambda: "b.jpg" in records(cfg), 10, "b.jpg's record")
        photo(b, (640, 480))
        wait_until(lambda: pool.started.count("b.jpg") == 2, 10, "b.jpg rendered again")
        wait_until(lambda: Image.open(outgoing / "b_200.jpg").height == 150, 10, "new b")

    drive(daemon, scenario)
    assert set(records(cfg)) == {"b.jpg"}


def test_new_files_go_ahead_of_the_backlog_which_still_finishes(
    folders: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="thumbd")
    incoming, _, cfg = folders
    for i in range(30):
        photo(incoming / "old" / f"b{i:03}.jpg", (64, 48))
    daemon, pool = make(cfg, once=False)
    pool.gate.clear()  # the pool holds what it took (capacity 4); the rest of the scan waits

    def scenario() -> None:
        wait_until(lambda: len(pool.started) == 4, 10, "the pool to fill with the backlog")
        wait_until(lambda: daemon.dispatcher.ready() == 26, 10, "the backlog to queue")
        photo(incoming / "new.jpg", (64, 48))  # an event while 26 wait
        wait_until(lambda: "new.jpg" in daemon.dispatcher.queued, 10, "new.jpg to queue")
        pool.gate.set()
        wait_until(lambda: len(records(cfg)) == 31, 30, "everything recorded")

    drive(daemon, scenario)
    assert pool.started.index("new.jpg") == 4  # the first to go once the pool had room
    assert all(status == "done" for status, _ in records(cfg).values())
    # The per-file line says how long a file waited for a worker apart from its render: the
    # last of the backlog waited while the gate was shut, in the line's total.
    line = next(r.getMessage() for r in caplog.records if "done old/b029.jpg" in r.getMessage())
    found = re.search(r"in (\d+) ms \(waited (\d+) ms, render \d+ ms\)", line)
    assert found is not None, line
    total, waited = int(found[1]), int(found[2])
    assert 0 < waited <= total, line


def test_a_trickle_of_new_files_cannot_starve_the_backlog(
    folders: tuple[Path, Path, Path],
) -> None:
    _, _, cfg = folders
    config = load_config(cfg)
    shared = Shared(config, spec_from_config(config), queue.SimpleQueue(), once=False)
    publisher = Publisher(shared, Writer(config.paths.outgoing), Downloads(config, print))
    pool = ScriptedPool()
    pool.capacity = lambda: 1000  # type: ignore[method-assign]  # takes everything at once
    dispatcher = Dispatcher(shared, publisher, lambda c, o: pool)
    dispatcher.start()
    for i in range(10):
        dispatcher.enqueue(Job(f"b{i}", f"/nonexistent/b{i}.jpg", (1, 1, 1), 0.0))
        dispatcher.enqueue(Job(f"n{i}", f"/nonexistent/n{i}.jpg", (1, 1, 1), 0.0, new=True))
    pool.release.set()
    dispatcher.tick(time.monotonic())
    lanes = "".join(name[0] for name in pool.started)
    assert lanes == "nnnbnnnbnnnbnbbbbbbb"  # one in BACKLOG_SHARE while both lanes wait


def test_opens_an_earlier_watcher_queued_hold_nothing(folders: tuple[Path, Path, Path]) -> None:
    # Events already in the inbox when a reload moved incoming/ (the old folder's), and opens
    # an earlier observer saw (their closes may have gone unseen), must not hold a file.
    incoming, outgoing, cfg = folders
    old = time.time() - 3600
    for name in ("x.jpg", "z.jpg"):
        os.utime(photo(incoming / name), (old, old))
    daemon, _ = make(cfg, once=False)

    def scenario() -> None:
        wait_until(lambda: (outgoing / "z_200.jpg").exists(), 10, "the start-up scan's files")
        wait_until(lambda: (outgoing / "x_200.jpg").exists(), 10, "the start-up scan's files")
        root, now = os.path.realpath(incoming), daemon.tracker.observer
        assert now > 0  # the running observer's number
        for e in (
            FsEvent("x.jpg", None, opens=1, root="/an/earlier/incoming", observer=now - 1),
            FsEvent("x.jpg", False, root="/an/earlier/incoming", observer=now - 1),
            FsEvent("z.jpg", None, opens=1, root=root, observer=now - 1),
            FsEvent("z.jpg", False, root=root, observer=now),  # written, as far as we know
        ):
            daemon.shared.inbox.put(e)
        photo(incoming / "after.jpg")  # its events come after those
        wait_until(lambda: (outgoing / "after_200.jpg").exists(), 10, "after.jpg")
        wait_until(lambda: len(daemon.tracker.settler) == 0, 5, "nothing held")
        os.kill(os.getpid(), signal.SIGTERM)

    assert drive(daemon, scenario) == 0
