"""The watchdog side, with a real observer on a real folder."""

from __future__ import annotations

import logging
import os
import queue
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from thumbd.intake.watcher import FsEvent, Watcher


def collect(inbox: queue.SimpleQueue[Any], want: Any, timeout: float = 10) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(inbox.get(timeout=0.1))
        except queue.Empty:
            continue
        if want(got):
            return got
    raise AssertionError(f"did not see the expected events; got {got}")


def test_a_written_file_is_seen_closed(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()  # a folder made after start may miss close events (see intake)
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    w = Watcher(str(tmp_path), inbox, polling=False)
    w.start()
    try:
        (tmp_path / "sub" / "a.jpg").write_bytes(b"data")
        collect(inbox, lambda got: FsEvent("sub/a.jpg", True, opens=-1) in got)
    finally:
        w.stop()


def test_a_file_moved_in_from_outside_counts_as_complete(tmp_path: Path) -> None:
    watched, outside = tmp_path / "in", tmp_path / "out"
    watched.mkdir()
    outside.mkdir()
    (outside / "m.jpg").write_bytes(b"data")
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    w = Watcher(str(watched), inbox, polling=False)
    w.start()
    try:
        os.rename(outside / "m.jpg", watched / "m.jpg")
        got = collect(inbox, lambda got: FsEvent("m.jpg", True) in got)
        assert FsEvent("m.jpg", False) not in got  # not mistaken for a writer starting
    finally:
        w.stop()


class FlakyInbox(queue.SimpleQueue):  # type: ignore[type-arg]
    """An inbox whose first put raises, as any bug in the handler path would."""

    failed = False

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the handler path")
        super().put(item, block, timeout)


def test_an_exception_in_the_handler_does_not_kill_the_observer(tmp_path: Path) -> None:
    inbox = FlakyInbox()
    w = Watcher(str(tmp_path), inbox, polling=False)
    w.start()
    try:
        (tmp_path / "first.jpg").write_bytes(b"1")
        wait_until(lambda: inbox.failed, 10, "the handler's failure")
        assert w.alive()
        (tmp_path / "second.jpg").write_bytes(b"2")
        collect(inbox, lambda got: FsEvent("second.jpg", True, opens=-1) in got)
    finally:
        w.stop()


def test_a_deleted_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "d.jpg").write_bytes(b"x")
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    w = Watcher(str(tmp_path), inbox, polling=False)
    w.start()
    try:
        (tmp_path / "d.jpg").unlink()
        collect(inbox, lambda got: FsEvent("d.jpg", None, deleted=True) in got)
    finally:
        w.stop()


def test_polling_sees_new_files(tmp_path: Path) -> None:
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    w = Watcher(str(tmp_path), inbox, polling=True)
    w.start()
    try:
        (tmp_path / "p.jpg").write_bytes(b"x")
        collect(inbox, lambda got: any(isinstance(e, FsEvent) and e.rel == "p.jpg" for e in got))
    finally:
        w.stop()


def test_watchdogs_overflow_warning_is_kept_out_of_the_log_and_is_not_the_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """watchdog's reader thread warns as soon as it reads an overflow, ahead of the events read
    before it: the message is the in-band EventsLostEvent (the real overflow is in
    tests/integration/test_robustness.py), the warning only noise, one per overflow."""
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    w = Watcher(str(tmp_path), inbox, polling=False)
    w.start()
    try:
        with caplog.at_level(logging.WARNING):
            # The exact warnings watchdog 7.1 logs when the kernel queue overflows.
            logging.getLogger("watchdog.observers.inotify_c").warning(
                "Inotify queue overflowed; filesystem events were lost"
            )
            logging.getLogger("watchdog.observers.inotify").warning(
                "Inotify queue overflowed; reconciling recursive watches below %r", str(tmp_path)
            )
            logging.getLogger("watchdog.observers.inotify").warning("something else")
        assert [r.getMessage() for r in caplog.records] == ["something else"]
        assert inbox.empty()
    finally:
        w.stop()


def test_the_kernel_is_asked_for_opens_and_both_closes(tmp_path: Path) -> None:
    """A file still open for writing is held until its close: that takes IN_OPEN and both
    IN_CLOSE_WRITE and IN_CLOSE_NOWRITE (a reader's close must not leave it held)."""
    (tmp_path / "sub").mkdir()
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    w = Watcher(str(tmp_path), inbox, polling=False)
    w.start()
    try:
        masks = inotify_masks()
        assert len(masks) >= 2  # the folder and its sub-folder
        for mask in masks:
            assert mask & 0x20, "IN_OPEN"
            assert mask & 0x10, "IN_CLOSE_NOWRITE"
            assert mask & 0x08, "IN_CLOSE_WRITE"
    finally:
        w.stop()


def inotify_masks() -> list[int]:
    """The event masks of this process's inotify watches, as the kernel reports them."""
    masks = []
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("inotify wd:"):
                fields = dict(f.split(":", 1) for f in line.split()[1:] if ":" in f)
                masks.append(int(fields["mask"], 16))
    return masks


def test_a_folder_renamed_inside_is_one_move_without_the_made_up_moves_of_its_files(
    tmp_path: Path,
) -> None:
    """watchdog follows a folder's move with a made-up move per file in it (a listing of the
    new folder); the folder's own move covers them, so only it is posted."""
    from thumbd.intake.watcher import DirArrived, DirGone, Moved

    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "x.jpg").write_bytes(b"data")
    (tmp_path / "a" / "sub" / "y.jpg").write_bytes(b"data")
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    w = Watcher(str(tmp_path), inbox, polling=False)
    w.start()
    try:
        os.rename(tmp_path / "a", tmp_path / "b")
        os.rename(tmp_path / "b" / "x.jpg", tmp_path / "b" / "z.jpg")  # a file's own move
        got = collect(inbox, lambda got: Moved("b/x.jpg", "b/z.jpg", folder=False) in got)
        moves = [m for m in got if isinstance(m, Moved)]
        assert moves == [Moved("a", "b", folder=True), Moved("b/x.jpg", "b/z.jpg", folder=False)]
        assert not any(isinstance(m, DirGone | DirArrived) for m in got)
    finally:
        w.stop()


def test_opens_and_a_readers_close_are_reported_with_the_folder_watched(tmp_path: Path) -> None:
    (tmp_path / "r.jpg").write_bytes(b"x")
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    w = Watcher(str(tmp_path), inbox, polling=False)
    w.start()
    try:
        (tmp_path / "r.jpg").read_bytes()
        got = collect(inbox, lambda got: FsEvent("r.jpg", None, opens=-1) in got)
        assert FsEvent("r.jpg", None, opens=1) in got
        assert {e.root for e in got} == {os.path.realpath(tmp_path)}
    finally:
        w.stop()
