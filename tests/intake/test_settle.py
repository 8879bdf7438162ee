"""Which paths are work, and when a file is complete."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests import images
from thumbd.intake.settle import (
    Kind,
    Settler,
    _suffix,
    classify,
    ignored_extension,
    shown,
    storable,
)
from thumbd.render.pipeline import ALLOWED_FORMATS, render
from thumbd.render.spec import RenderSpec


@pytest.mark.parametrize(
    "rel",
    [
        ".x.jpg.Ab12Cd",  # rsync
        ".syncthing.x.jpg.tmp",  # Syncthing
        ".x.jpg.~1a2b3c4d",  # Nextcloud
        "x.jpg.part",
        "x.jpg.partial",
        "x.jpg.crdownload",
        "x.jpg.tmp",
        "x.jpg~",
        "a/.~tmp~/x.jpg",  # rsync --delay-updates
        "notes.txt",
        "x",
    ],
)
def test_temporary_and_other_names_are_ignored(rel: str) -> None:
    assert classify(rel) is None


@pytest.mark.parametrize(
    "rel", ["x.jpg", "a/b/X.JPG", "y.jpeg", "z.png", "g.gif", "w.webp", "t.TIFF"]
)
def test_images_are_work(rel: str) -> None:
    assert classify(rel) is Kind.IMAGE


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("saved-by-chrome.jfif", "JPEG"),  # Chrome and Windows' "Save image as" for JPEG
        ("x.jif", "JPEG"),
        ("x.jfi", "JPEG"),
        ("3DS_0001.MPO", "MPO"),  # stereo cameras, the Nintendo 3DS
        ("IMG_0001.HIF", "HEIF"),  # Canon, Fujifilm and Sony cameras' HEIF
        ("sticker.apng", "PNG"),
    ],
)
def test_camera_and_browser_extensions_are_work(tmp_path: Path, name: str, fmt: str) -> None:
    assert classify(f"a/{name}") is Kind.IMAGE
    if fmt == "HEIF" and "HEIF" not in ALLOWED_FORMATS:
        return
    src = tmp_path / name
    if fmt == "HEIF":
        images.make_heif(src)
    elif fmt == "MPO":
        images.make_mpo(src)
    else:
        images.natural((320, 240)).save(src, fmt)
    result = render(str(src), RenderSpec(widths=(100,)))
    assert result.error is None and result.thumbnails[0].size == (100, 75)


def test_ignore_globs_match_names_and_relative_paths() -> None:
    assert classify("raw/x.jpg", ("raw/*",)) is None
    assert classify("a/x_thumb.jpg", ("*_thumb.jpg",)) is None
    assert classify("a/x.jpg", ("raw/*", "*_thumb.jpg")) is Kind.IMAGE


def drain(settler: Settler, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    ready: list[str] = []
    while time.monotonic() < deadline and not ready:
        ready += [rel for rel, _ in settler.pop_ready(time.monotonic())]
        time.sleep(0.01)  # a poll interval
    return ready


def test_a_closed_file_is_ready_after_settling(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x" * 10)
    s = Settler(str(tmp_path), settle=0.1, quiet=30)
    s.touch("a.jpg", time.monotonic(), closed=True)
    assert drain(s, 2) == ["a.jpg"]
    assert len(s) == 0


def test_a_file_still_being_written_waits_for_quiet(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    s = Settler(str(tmp_path), settle=0.05, quiet=0.6)
    with p.open("wb") as f:
        for _ in range(6):  # writes 0.15 s apart: longer than settle, shorter than quiet
            f.write(b"x" * 100)
            f.flush()
            s.touch("a.jpg", time.monotonic(), closed=False)
            assert drain(s, 0.15) == []
    started = time.monotonic()
    assert drain(s, 3) == ["a.jpg"]
    assert time.monotonic() - started >= 0.4


def test_a_close_after_writing_ends_the_quiet_wait(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    s = Settler(str(tmp_path), settle=0.05, quiet=30)
    p.write_bytes(b"x")
    s.touch("a.jpg", time.monotonic(), closed=False)
    assert drain(s, 0.3) == []
    s.touch("a.jpg", time.monotonic(), closed=True)
    assert drain(s, 2) == ["a.jpg"]


def test_a_found_file_with_an_old_mtime_is_ready_at_once(tmp_path: Path) -> None:
    p = tmp_path / "old.jpg"
    p.write_bytes(b"x")
    os.utime(p, (time.time() - 3600, time.time() - 3600))
    s = Settler(str(tmp_path), settle=0.05, quiet=30)
    s.found("old.jpg", time.monotonic())
    assert drain(s, 1) == ["old.jpg"]


def test_a_changing_file_is_not_ready_until_it_stops(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    p.write_bytes(b"x")
    s = Settler(str(tmp_path), settle=0.2, quiet=0)
    s.touch("a.jpg", time.monotonic(), closed=True)
    time.sleep(0.1)  # paces the writer: the change lands inside the settle window
    p.write_bytes(b"xy")  # changed without an event (a missed one): the signature catches it
    assert drain(s, 0.15) == []
    assert drain(s, 2) == ["a.jpg"]


def test_deleted_and_non_regular_files_are_dropped(tmp_path: Path) -> None:
    (tmp_path / "gone.jpg").write_bytes(b"x")
    (tmp_path / "dir.jpg").mkdir()
    os.symlink("/etc/passwd", tmp_path / "link.jpg")
    s = Settler(str(tmp_path), settle=0.05, quiet=0)
    for rel in ("gone.jpg", "dir.jpg", "link.jpg"):
        s.touch(rel, time.monotonic(), closed=True)
    (tmp_path / "gone.jpg").unlink()
    assert drain(s, 0.5) == []
    assert len(s) == 0


@pytest.mark.parametrize("rel", ["a/b.urls", "X.URLS"])
def test_url_manifests_are_work(rel: str) -> None:
    assert classify(rel) is Kind.MANIFEST


@pytest.mark.parametrize("rel", [".b.urls", "a/.tmp/b.urls", "b.urls.tmp", "b.urls~"])
def test_temporary_manifests_are_ignored(rel: str) -> None:
    assert classify(rel) is None


# -- exact rules, on a clock of the test's own -----------------------------------------------


@pytest.mark.parametrize(
    ("rel", "ext"),
    [
        ("notes.txt", ".txt"),
        ("a/X.PDF", ".pdf"),
        ("x", ""),  # no extension
        ("x.jpg", None),  # work, not ignored
        ("a.urls", None),  # a manifest is work too
        (".x.txt", None),  # a dotfile: left out on purpose, not for its type
        ("x.txt.part", None),  # a temporary name
        ("", None),
    ],
)
def test_ignored_extensions_are_what_status_counts(rel: str, ext: str | None) -> None:
    assert ignored_extension(rel) == ext


def test_ignore_globs_are_passed_on() -> None:
    assert ignored_extension("raw/x.pdf", ("raw/*",)) is None
    assert ignored_extension("x.pdf", ("*.pdf",)) is None
    assert classify("./x.jpg") is Kind.IMAGE and classify("a//x.jpg") is Kind.IMAGE


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("a.b.jpg", ".jpg"), ("x.j", ".j"), ("x.", ""), (".bashrc", ""), ("x", ""), ("..", "")],
)
def test_the_suffix_is_the_last_dots_part(name: str, suffix: str) -> None:
    assert _suffix(name) == suffix


def test_names_that_are_not_utf8_are_not_storable_and_shown_escaped() -> None:
    assert storable("a/café.jpg") and storable("x.jpg")
    assert not storable("a/\udcff.jpg")
    assert shown("a/\udcff.jpg") == "a/\\xff.jpg"
    assert shown("a/café.jpg") == "a/café.jpg"


def settler(tmp_path: Path, settle: float = 0.25, quiet: float = 30.0) -> Settler:
    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "b.jpg").write_bytes(b"b")
    return Settler(str(tmp_path), settle, quiet)


def test_a_closed_file_is_ready_exactly_when_it_has_settled(tmp_path: Path) -> None:
    s = settler(tmp_path)
    s.touch("a.jpg", 100.0, closed=True)
    assert "a.jpg" in s and "b.jpg" not in s
    assert s.next_due() == 100.25
    assert s.pop_ready(100.125) == []
    st = (tmp_path / "a.jpg").stat()
    assert s.pop_ready(100.25) == [("a.jpg", (st.st_size, st.st_mtime_ns, st.st_ino))]
    assert "a.jpg" not in s and s.next_due() is None and len(s) == 0


def test_an_attribute_change_keeps_what_was_known_about_the_close(tmp_path: Path) -> None:
    s = settler(tmp_path)
    s.touch("a.jpg", 100.0, closed=True)
    s.touch("a.jpg", 100.0, closed=None)  # a chmod: it was closed, it stays closed
    assert len(s) == 1 and s.next_due() == 100.25
    assert [rel for rel, _ in s.pop_ready(100.25)] == ["a.jpg"]


def test_found_files_are_due_after_settling_and_discarded_ones_never(tmp_path: Path) -> None:
    s = settler(tmp_path)
    old = time.time() - 3600
    os.utime(tmp_path / "a.jpg", (old, old))
    os.utime(tmp_path / "b.jpg", (old, old))
    now = time.monotonic()
    s.found("a.jpg", now)
    s.found("b.jpg", now + 0.0625)
    assert s.next_due() == now + 0.25
    s.discard("a.jpg")
    s.discard("never.jpg")  # not tracked: nothing to do
    assert s.next_due() == now + 0.3125
    assert [rel for rel, _ in s.pop_ready(now + 1)] == ["b.jpg"]  # past the dropped one


def test_a_found_file_written_a_moment_ago_waits_for_quiet_from_its_mtime(tmp_path: Path) -> None:
    s = settler(tmp_path, settle=0.125, quiet=1.0)
    (tmp_path / "a.jpg").write_bytes(b"new")  # mtime: now
    now = time.monotonic()
    s.found("a.jpg", now)
    assert s.pop_ready(now + 0.5) == []
    assert [rel for rel, _ in s.pop_ready(now + 1.5)] == ["a.jpg"]


def test_a_file_first_seen_is_checked_against_its_size_then(tmp_path: Path) -> None:
    s = settler(tmp_path)
    s.touch("a.jpg", 100.0, closed=True)
    (tmp_path / "a.jpg").write_bytes(b"longer")  # grew after the event
    assert s.pop_ready(100.25) == []  # not settled: it changed since it was first seen
    assert [rel for rel, _ in s.pop_ready(100.5)] == ["a.jpg"]


def test_a_stale_or_dropped_entry_does_not_hold_up_the_others(tmp_path: Path) -> None:
    s = settler(tmp_path)
    s.touch("a.jpg", 100.0, closed=True)
    s.touch("b.jpg", 100.0625, closed=True)
    s.touch("a.jpg", 100.125, closed=True)  # a is due later now: its first entry is stale
    assert [rel for rel, _ in s.pop_ready(100.3125)] == ["b.jpg"]
    s.touch("b.jpg", 101.0, closed=True)
    s.discard("a.jpg")  # dropped: its entry is still first in the heap
    assert [rel for rel, _ in s.pop_ready(102.0)] == ["b.jpg"]


def test_a_change_is_looked_at_again_one_settle_later_whatever_the_quiet_wait(
    tmp_path: Path,
) -> None:
    s = settler(tmp_path)  # settle 0.25 s, quiet 30 s
    s.touch("a.jpg", 100.0, closed=False)
    (tmp_path / "a.jpg").write_bytes(b"longer")
    assert s.pop_ready(100.25) == []  # changed since it was first seen
    assert s.next_due() == 100.5


# -- a file still open for writing -------------------------------------------------------------


def aged(tmp_path: Path) -> Settler:
    """settler() with files from 2001: the quiet rule counts from the test's events alone
    (their mtimes, on the monotonic clock, fall long before the test's clock of 100 s)."""
    s = settler(tmp_path, quiet=30.0)
    old = 1_000_000_000.0  # 2001: far older than any monotonic clock
    for name in ("a.jpg", "b.jpg"):
        os.utime(tmp_path / name, (old, old))
    return s


def test_a_file_written_and_still_open_is_held_until_the_cap(tmp_path: Path) -> None:
    s = aged(tmp_path)
    s.count_open("a.jpg", 1, 100.0)
    s.touch("a.jpg", 100.0, closed=False)  # written; its close not seen
    assert s.is_held("a.jpg")
    assert s.pop_ready(130.0) == []  # quiet_seconds are over: still held for its writer
    assert s.next_due() == 100.0 + s.hold
    assert s.pop_ready(100.0 + s.hold - 1) == []
    assert [rel for rel, _ in s.pop_ready(100.0 + s.hold)] == ["a.jpg"]  # then quiet decides


def test_the_writers_close_ends_the_hold_and_a_readers_does_not(tmp_path: Path) -> None:
    s = aged(tmp_path)
    s.count_open("a.jpg", 1, 100.0)  # the writer
    s.touch("a.jpg", 100.0, closed=False)
    s.count_open("a.jpg", 1, 101.0)  # a reader comes and goes: still held
    s.count_open("a.jpg", -1, 101.5)
    assert s.is_held("a.jpg") and s.pop_ready(200.0) == []
    s.count_open("a.jpg", -1, 300.0)  # the writer's close (close_write) ...
    s.touch("a.jpg", 300.0, closed=True)
    assert not s.is_held("a.jpg")
    assert [rel for rel, _ in s.pop_ready(300.25)] == ["a.jpg"]  # ... ready once settled


def test_a_file_open_for_reading_only_is_not_held(tmp_path: Path) -> None:
    s = aged(tmp_path)
    s.count_open("a.jpg", 1, 100.0)  # a viewer keeps it open, nothing written
    s.found("a.jpg", 100.0)
    assert not s.is_held("a.jpg")
    assert [rel for rel, _ in s.pop_ready(100.25)] == ["a.jpg"]
    # A writer that closed while a reader still has the file open leaves nothing held.
    s.count_open("b.jpg", 1, 200.0)
    s.touch("b.jpg", 200.0, closed=False)
    s.count_open("b.jpg", 1, 201.0)
    s.count_open("b.jpg", -1, 202.0)
    s.touch("b.jpg", 202.0, closed=True)
    assert not s.is_held("b.jpg")
    assert [rel for rel, _ in s.pop_ready(202.25)] == ["b.jpg"]


def test_closes_seen_without_opens_leave_no_count_behind(tmp_path: Path) -> None:
    s = aged(tmp_path)
    s.count_open("a.jpg", -1, 100.0)  # the open came before the watch, or to another observer
    s.count_open("a.jpg", 1, 101.0)
    s.touch("a.jpg", 101.0, closed=False)
    assert s.is_held("a.jpg")  # the count went no lower than none


def test_opens_that_may_be_wrong_are_dropped_and_release_their_holds(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jpg").write_bytes(b"x")
    s = aged(tmp_path)
    old = 1_000_000_000.0  # 2001: far older than any monotonic clock
    os.utime(tmp_path / "d" / "x.jpg", (old, old))
    for rel in ("a.jpg", "d/x.jpg"):
        s.count_open(rel, 1, 100.0)
        s.touch(rel, 100.0, closed=False)
    s.forget_opens(110.0, "d")  # d/ was moved away: its files' events tell of elsewhere
    assert not s.is_held("d/x.jpg") and s.is_held("a.jpg")
    s.forget_opens(120.0)  # events were lost (an overflow, a new observer)
    assert not s.is_held("a.jpg")
    assert sorted(rel for rel, _ in s.pop_ready(130.0)) == ["a.jpg", "d/x.jpg"]
    s.count_open("b.jpg", 1, 200.0)
    s.discard("b.jpg")  # deleted or renamed away while open
    s.touch("b.jpg", 201.0, closed=False)  # a new file of that name, written
    assert not s.is_held("b.jpg")


def test_a_move_carries_a_held_files_opens_to_its_new_name(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    s = aged(tmp_path)
    s.count_open("a.jpg", 1, 100.0)  # its writer still has it open
    s.touch("a.jpg", 100.0, closed=False)
    os.rename(tmp_path / "a.jpg", tmp_path / "d" / "a.jpg")  # renamed while written
    assert s.move("a.jpg", "d/a.jpg", 101.0) == ["d/a.jpg"]
    assert s.is_held("d/a.jpg") and not s.is_held("a.jpg")
    assert s.pop_ready(140.0) == []  # quiet_seconds are over: held for its writer still
    s.count_open("d/a.jpg", -1, 150.0)  # the writer's close comes under the new name
    s.touch("d/a.jpg", 150.0, closed=True)
    assert not s.is_held("d/a.jpg")
    assert [rel for rel, _ in s.pop_ready(150.25)] == ["d/a.jpg"]
