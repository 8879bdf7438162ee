"""Moves and renames inside incoming/: the thumbnails follow their sources, nothing is rendered.

Each test runs the real daemon on real folders and moves files the way `mv` does (one rename).
A thumbnail that was moved keeps its inode; one rendered again has a new one: the inodes tell
which happened.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Daemon, made, wait_until
from tests.integration.test_arrivals import live_after
from tests.integration.test_robustness import drop, jpeg_bytes


def inodes(paths: list[Path]) -> list[tuple[int, int]]:
    """Each file's inode and mtime: a rename keeps both, a new render (which may be given an
    inode freed a moment ago) not the mtime."""
    return [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths]


def rendered(daemon: Daemon, rel: str) -> int:
    """How often the log says `rel` was rendered."""
    return len(re.findall(rf"done {re.escape(rel)}: ", daemon.read_log()))


def thumbs_under(daemon: Daemon, folder: str) -> list[str]:
    root = daemon.outgoing / folder
    return sorted(
        p.relative_to(daemon.outgoing).as_posix()
        for p in made(daemon.outgoing)
        if root in p.parents
    )


@pytest.mark.parametrize("on_delete", ["keep", "remove"])
def test_a_renamed_file_takes_its_thumbnails_and_index_along(
    daemon: Daemon, on_delete: str
) -> None:
    daemon.write_config({"thumbnails": {"on_delete": on_delete, "index": True}})
    daemon.start()
    drop(daemon.incoming / "a", ["x.jpg"], jpeg_bytes((300, 200)))
    wait_until(lambda: daemon.done("a/x.jpg"), 30, "x's thumbnails")
    daemon.recorded(done=1)
    before = inodes(daemon.thumbs("a/x.jpg"))
    os.rename(daemon.incoming / "a" / "x.jpg", daemon.incoming / "a" / "y.jpg")
    wait_until(lambda: daemon.done("a/y.jpg"), 30, "the thumbnails under the new name")
    daemon.looked()
    assert inodes(daemon.thumbs("a/y.jpg")) == before  # moved, not rendered
    assert not any(p.exists() for p in daemon.thumbs("a/x.jpg"))
    assert not (daemon.outgoing / "a" / "x.json").exists()
    index = json.loads((daemon.outgoing / "a" / "y.json").read_text())
    assert index["source"]["file"] == "y.jpg"
    assert [t["file"] for t in index["thumbnails"]] == ["y_200.jpg", "y_64.jpg", "y_32.jpg"]
    assert rendered(daemon, "a/y.jpg") == 0
    assert "moved a/x.jpg -> a/y.jpg: 1 source, 0 rendered" in daemon.read_log()
    assert daemon.record("a/x.jpg") is None and daemon.record("a/y.jpg") == "done"
    assert daemon.stop() == 0


@pytest.mark.parametrize("on_delete", ["keep", "remove"])
def test_a_renamed_folder_is_one_rename_in_outgoing_and_renders_nothing(
    daemon: Daemon, on_delete: str
) -> None:
    daemon.write_config({"thumbnails": {"on_delete": on_delete, "gallery": True}})
    daemon.start()
    names = [f"p{i}.jpg" for i in range(20)]
    drop(daemon.incoming / "album" / "day 1", names[:10], jpeg_bytes((120, 90), seed=1))
    drop(daemon.incoming / "album", names[10:], jpeg_bytes((120, 90), seed=2))
    daemon.recorded(done=20)
    folder_inode = (daemon.outgoing / "album").stat().st_ino
    before = {n: inodes(daemon.thumbs(f"album/{n}")) for n in names[10:]}
    os.rename(daemon.incoming / "album", daemon.incoming / "2024 Lisbon")
    wait_until(lambda: "moved album -> 2024 Lisbon" in daemon.read_log(), 30, "the move")
    daemon.looked()
    assert "moved album -> 2024 Lisbon: 20 sources, 0 rendered" in daemon.read_log()
    assert not (daemon.outgoing / "album").exists()
    assert (daemon.outgoing / "2024 Lisbon").stat().st_ino == folder_inode  # one rename
    for n in names[10:]:
        assert inodes(daemon.thumbs(f"2024 Lisbon/{n}")) == before[n]
    for n in names[:10]:
        assert daemon.done(f"2024 Lisbon/day 1/{n}")
    assert "done 2024 Lisbon/" not in daemon.read_log()
    daemon.recorded(done=21, pending=0)  # and the sentinel
    assert daemon.record("album/p10.jpg") is None
    assert daemon.record("2024 Lisbon/day 1/p0.jpg") == "done"
    wait_until(lambda: (daemon.outgoing / "2024 Lisbon" / "index.html").exists(), 30, "the gallery")
    assert daemon.stop() == 0


def test_a_move_onto_a_taken_stem_follows_the_same_stem_rules_and_says_so(
    daemon: Daemon,
) -> None:
    daemon.start()
    drop(daemon.incoming, ["x.jpg"], jpeg_bytes((120, 90), seed=1))
    drop(daemon.incoming, ["y.jpg"], jpeg_bytes((120, 90), seed=2))
    daemon.recorded(done=2)
    before = inodes(daemon.thumbs("y.jpg"))
    os.rename(daemon.incoming / "y.jpg", daemon.incoming / "x.jpeg")
    moved = [daemon.outgoing / f"x.jpeg_{w}.jpg" for w in (200, 64, 32)]
    wait_until(lambda: all(p.exists() for p in moved), 30, "x.jpeg's own names")
    daemon.looked()
    assert inodes(moved) == before
    assert daemon.done("x.jpg")  # x.jpg keeps the plain names
    assert not any(p.exists() for p in daemon.thumbs("y.jpg"))
    assert "x.jpeg: x_200.jpg already belongs to x.jpg; writing x.jpeg_200.jpg" in (
        daemon.read_log()
    )
    assert rendered(daemon, "x.jpeg") == 0
    assert daemon.stop() == 0


def test_a_move_onto_another_source_replaces_it(daemon: Daemon) -> None:
    daemon.start()
    drop(daemon.incoming, ["a.jpg"], jpeg_bytes((120, 90), seed=1))
    drop(daemon.incoming, ["b.jpg"], jpeg_bytes((160, 90), seed=2))
    daemon.recorded(done=2)
    a_thumbs = inodes(daemon.thumbs("a.jpg"))
    os.rename(daemon.incoming / "a.jpg", daemon.incoming / "b.jpg")
    wait_until(lambda: "moved a.jpg -> b.jpg" in daemon.read_log(), 30, "the move")
    daemon.looked()
    assert inodes(daemon.thumbs("b.jpg")) == a_thumbs  # a's thumbnails, b's gone
    assert not any(p.exists() for p in daemon.thumbs("a.jpg"))
    assert rendered(daemon, "b.jpg") == 1  # its first render only
    assert "b.jpg was replaced by a move: its thumbnails go" in daemon.read_log()
    assert daemon.recorded(done=2, pending=0)["done"] == 2  # b and the sentinel
    assert daemon.stop() == 0


def test_a_rename_cycle_and_a_swap_by_name_move_only_thumbnails(daemon: Daemon) -> None:
    daemon.start()
    drop(daemon.incoming, ["a.jpg"], jpeg_bytes((120, 90), seed=1))
    drop(daemon.incoming, ["b.jpg"], jpeg_bytes((160, 90), seed=2))
    daemon.recorded(done=2)
    a, b = inodes(daemon.thumbs("a.jpg")), inodes(daemon.thumbs("b.jpg"))
    inc = daemon.incoming
    os.rename(inc / "a.jpg", inc / "c.jpg")  # a -> c, c -> a within a second
    os.rename(inc / "c.jpg", inc / "a.jpg")
    daemon.looked()
    assert inodes(daemon.thumbs("a.jpg")) == a
    assert not any(p.exists() for p in daemon.thumbs("c.jpg"))
    os.rename(inc / "a.jpg", inc / "t.jpg")  # swap a and b by name
    os.rename(inc / "b.jpg", inc / "a.jpg")
    os.rename(inc / "t.jpg", inc / "b.jpg")
    daemon.looked()
    assert inodes(daemon.thumbs("a.jpg")) == b
    assert inodes(daemon.thumbs("b.jpg")) == a
    assert not any(p.exists() for p in daemon.thumbs("t.jpg"))
    assert rendered(daemon, "a.jpg") == 1 and rendered(daemon, "b.jpg") == 1
    daemon.recorded(done=4, pending=0)  # and two sentinels
    assert daemon.stop() == 0


def test_a_folder_moved_while_a_file_in_it_is_written_takes_that_file_once_complete(
    daemon: Daemon,
) -> None:
    # quiet_seconds is short: what keeps the half-written file back is its writer holding it
    # open, counted under its new name after the move (intake/settle.py).
    daemon.write_config({"watch": {"settle_seconds": 0.1, "quiet_seconds": 2}})
    daemon.start()
    drop(daemon.incoming / "album", ["done.jpg"], jpeg_bytes((120, 90), seed=1))
    daemon.recorded(done=1)
    data = jpeg_bytes((400, 300), seed=3)
    with (daemon.incoming / "album" / "late.jpg").open("wb") as f:
        f.write(data[:1000])
        f.flush()
        os.rename(daemon.incoming / "album", daemon.incoming / "moved")
        wait_until(lambda: "moved album -> moved" in daemon.read_log(), 30, "the move")
        live_after(daemon, time.time() + 3)  # longer than quiet_seconds: still held
        assert daemon.record("moved/late.jpg") is None
        f.write(data[1000:])
    wait_until(lambda: daemon.done("moved/late.jpg"), 30, "the file written on after the move")
    daemon.looked()
    assert rendered(daemon, "moved/late.jpg") == 1
    assert "failed" not in daemon.read_log()
    assert thumbs_under(daemon, "album") == []
    assert daemon.done("moved/done.jpg") and rendered(daemon, "moved/done.jpg") == 0
    assert daemon.stop() == 0


def test_a_file_edited_right_after_its_move_is_rendered_again_once(daemon: Daemon) -> None:
    daemon.start()
    drop(daemon.incoming, ["a.jpg"], jpeg_bytes((120, 90), seed=1))
    daemon.recorded(done=1)
    before = inodes(daemon.thumbs("a.jpg"))
    os.rename(daemon.incoming / "a.jpg", daemon.incoming / "b.jpg")
    (daemon.incoming / "b.jpg").write_bytes(jpeg_bytes((200, 90), seed=5))
    wait_until(lambda: rendered(daemon, "b.jpg") == 1, 30, "the edited file's render")
    daemon.looked()
    assert rendered(daemon, "b.jpg") == 1
    after = inodes(daemon.thumbs("b.jpg"))
    assert not set(after) & set(before)
    assert not any(p.exists() for p in daemon.thumbs("a.jpg"))
    daemon.recorded(done=2, pending=0)
    assert daemon.stop() == 0


def since_start(daemon: Daemon) -> str:
    """The log of the last start on."""
    log = daemon.read_log()
    return log[log.rindex("thumbd started") :]


@pytest.mark.parametrize("on_delete", ["keep", "remove"])
def test_a_folder_renamed_while_thumbd_was_stopped_is_moved_at_start_not_rendered(
    daemon: Daemon, on_delete: str
) -> None:
    daemon.write_config({"thumbnails": {"on_delete": on_delete}})
    daemon.start()
    names = [f"p{i}.jpg" for i in range(12)]
    drop(daemon.incoming / "album", names, jpeg_bytes((120, 90), seed=1))
    drop(daemon.incoming / "loose", ["x.jpg"], jpeg_bytes((120, 90), seed=2))
    daemon.recorded(done=13)
    before = {n: inodes(daemon.thumbs(f"album/{n}")) for n in names}
    x = inodes(daemon.thumbs("loose/x.jpg"))
    assert daemon.stop() == 0
    os.rename(daemon.incoming / "album", daemon.incoming / "2024 Lisbon")
    (daemon.incoming / "elsewhere").mkdir()
    os.rename(daemon.incoming / "loose" / "x.jpg", daemon.incoming / "elsewhere" / "y.jpg")
    daemon.start()
    daemon.looked()
    log = since_start(daemon)
    assert "done " not in log.replace("done looked/", ""), log
    for n in names:
        assert inodes(daemon.thumbs(f"2024 Lisbon/{n}")) == before[n]
    assert inodes(daemon.thumbs("elsewhere/y.jpg")) == x
    assert thumbs_under(daemon, "album") == [] and thumbs_under(daemon, "loose") == []
    assert re.search(r"found (13|1|12) sources? moved while thumbd was not looking", log)
    assert "rendered" in log and "done " not in log.replace("done looked/", "")
    daemon.recorded(done=14, pending=0)
    assert daemon.stop() == 0


def moved_while_stopped(daemon: Daemon, on_delete: str) -> None:
    """album/p.jpg done, album renamed to moved/ while thumbd is stopped, thumbd started again:
    returns once the start-up scan has found moved/p.jpg, still settling (three seconds, time
    to change it before it is taken)."""
    daemon.write_config(
        {
            "thumbnails": {"on_delete": on_delete},
            "watch": {"settle_seconds": 3.0, "quiet_seconds": 3.0},
        }
    )
    daemon.start()
    drop(daemon.incoming / "album", ["p.jpg"], jpeg_bytes((120, 90), seed=1))
    daemon.recorded(done=1)
    assert daemon.stop() == 0
    os.rename(daemon.incoming / "album", daemon.incoming / "moved")
    daemon.start()
    wait_until(lambda: ": 1 to look at" in since_start(daemon), 30, "the start-up scan")


@pytest.mark.parametrize("on_delete", ["keep", "remove"])
def test_a_file_moved_while_stopped_then_changed_before_it_is_taken_is_a_move_and_an_edit(
    daemon: Daemon, on_delete: str
) -> None:
    """The start-up scan finds album/p.jpg gone and moved/p.jpg settling with its identity, so
    it keeps album/p.jpg's record for the move. Then moved/p.jpg is overwritten in place (same
    inode) before it is taken: a move, then an edit. The record and thumbnails move, and it is
    rendered once, as an edit; nothing stays under album/ whatever on_delete says (a move is not
    a deletion), and no record is left for album/p.jpg (found by the chaos run)."""
    moved_while_stopped(daemon, on_delete)
    with (daemon.incoming / "moved" / "p.jpg").open("r+b") as f:  # in place: the same inode
        f.write(jpeg_bytes((160, 120), seed=2))
        f.truncate()
    wait_until(lambda: rendered(daemon, "moved/p.jpg") == 1, 30, "moved/p.jpg rendered")
    daemon.recorded(done=1, pending=0)
    daemon.looked()
    assert daemon.record("album/p.jpg") is None
    assert daemon.record("moved/p.jpg") == "done"
    assert rendered(daemon, "moved/p.jpg") == 1
    assert thumbs_under(daemon, "album") == []
    assert len(thumbs_under(daemon, "moved")) == 3
    assert daemon.stop() == 0


def test_a_file_moved_while_stopped_then_deleted_before_it_is_taken_is_forgotten(
    daemon: Daemon,
) -> None:
    """As above, but moved/p.jpg is deleted before it is taken: album/p.jpg is forgotten at
    once, not left in the state until the next periodic rescan."""
    moved_while_stopped(daemon, "keep")
    (daemon.incoming / "moved" / "p.jpg").unlink()
    daemon.recorded(done=0, pending=0)
    assert daemon.record("album/p.jpg") is None
    assert "recorded source no longer exists; forgot them" in since_start(daemon)
    assert daemon.stop() == 0


def test_a_kill_in_the_middle_of_a_folder_move_loses_no_thumbnails(daemon: Daemon) -> None:
    """A kill -9 right after a folder's rename (whatever the daemon had done of the move by
    then), and the states a kill between its steps leaves: outgoing/ renamed but the rows not,
    and only some thumbnails renamed. The next start renders none of them."""
    daemon.start()
    names = [f"p{i}.jpg" for i in range(40)]
    drop(daemon.incoming / "a", names, jpeg_bytes((120, 90), seed=1))
    daemon.recorded(done=40)
    before = {n: inodes(daemon.thumbs(f"a/{n}")) for n in names}
    os.rename(daemon.incoming / "a", daemon.incoming / "b")
    daemon.stop(signal.SIGKILL)
    daemon.start()
    daemon.looked()
    assert "done b/" not in since_start(daemon)
    assert all(inodes(daemon.thumbs(f"b/{n}")) == before[n] for n in names)
    assert daemon.stop() == 0
    # What a kill between the rename in outgoing/ and the commit of the rows leaves.
    os.rename(daemon.incoming / "b", daemon.incoming / "c")
    os.rename(daemon.outgoing / "b", daemon.outgoing / "c")
    daemon.start()
    daemon.looked()
    assert "done c/" not in since_start(daemon)
    assert all(inodes(daemon.thumbs(f"c/{n}")) == before[n] for n in names)
    assert daemon.stop() == 0
    # And one in the middle of file-by-file renames: half the thumbnails moved.
    os.rename(daemon.incoming / "c", daemon.incoming / "d")
    for n in names[:20]:
        for t, u in zip(daemon.thumbs(f"c/{n}"), daemon.thumbs(f"d/{n}"), strict=True):
            u.parent.mkdir(exist_ok=True)
            os.rename(t, u)
    daemon.start()
    daemon.looked()
    assert "done d/" not in since_start(daemon)
    assert all(inodes(daemon.thumbs(f"d/{n}")) == before[n] for n in names)
    assert thumbs_under(daemon, "c") == []
    daemon.recorded(done=43, pending=0)  # and three sentinels
    assert daemon.stop() == 0


def test_a_copy_reuses_the_thumbnails_of_a_done_source_with_the_same_content(
    daemon: Daemon,
) -> None:
    daemon.start()
    data = jpeg_bytes((300, 200), seed=4, comment=b"AAAA")
    drop(daemon.incoming / "phone 1", ["IMG_1.jpg"], data)
    daemon.recorded(done=1)
    drop(daemon.incoming / "phone 2", ["IMG_1.jpg"], data)  # a second import
    os.link(daemon.incoming / "phone 1" / "IMG_1.jpg", daemon.incoming / "linked.jpg")
    other = jpeg_bytes((300, 200), seed=4, comment=b"BBBB")
    assert len(other) == len(data) and other != data
    drop(daemon.incoming, ["other.jpg"], other)  # the same size, other bytes
    wait_until(lambda: daemon.done("other.jpg"), 30, "the other file")
    daemon.looked()
    original = inodes(daemon.thumbs("phone 1/IMG_1.jpg"))
    assert inodes(daemon.thumbs("phone 2/IMG_1.jpg")) == original  # hard links: no render
    assert inodes(daemon.thumbs("linked.jpg")) == original
    assert rendered(daemon, "phone 2/IMG_1.jpg") == 0 and rendered(daemon, "linked.jpg") == 0
    assert rendered(daemon, "other.jpg") == 1
    assert "reused phone 2/IMG_1.jpg: the same content as phone 1/IMG_1.jpg" in daemon.read_log()
    daemon.recorded(done=5, pending=0)
    assert daemon.stop() == 0


def test_copies_arriving_together_are_rendered_once_and_all_end_done(daemon: Daemon) -> None:
    daemon.start()
    data = jpeg_bytes((300, 200), seed=6)
    names = [f"c{i}.jpg" for i in range(8)]
    drop(daemon.incoming / "burst", names, data)
    daemon.recorded(done=8, pending=0)
    daemon.looked()
    renders = sum(rendered(daemon, f"burst/{n}") for n in names)
    assert renders == 1, daemon.read_log()
    # Each file read once by the main loop: each copy, and their twin while it rendered (not
    # again when each copy is asked again once the twin is through).
    assert daemon.status()["daemon"]["hashed"] <= len(names)
    first = inodes(daemon.thumbs(f"burst/{names[0]}"))
    assert all(inodes(daemon.thumbs(f"burst/{n}")) for n in names)
    assert len({tuple(inodes(daemon.thumbs(f"burst/{n}"))) for n in names}) == 1, first
    assert daemon.stop() == 0
    assert " 0 left " in daemon.read_log().splitlines()[-1]


@pytest.mark.parametrize("on_delete", ["keep", "remove"])
def test_delete_then_create_elsewhere_within_the_window_moves_the_thumbnails(
    daemon: Daemon, on_delete: str
) -> None:
    """A move across filesystems (or a sync client's replay of a move) is a deletion and then
    a new file with the same bytes and a new inode."""
    daemon.write_config({"thumbnails": {"on_delete": on_delete}})
    daemon.start()
    data = jpeg_bytes((300, 200), seed=7)
    drop(daemon.incoming / "a", ["x.jpg"], data)
    daemon.recorded(done=1)
    before = inodes(daemon.thumbs("a/x.jpg"))
    (daemon.incoming / "a" / "x.jpg").unlink()
    wait_until(lambda: daemon.record("a/x.jpg") is None, 30, "the deletion")
    drop(daemon.incoming / "b", ["y.jpg"], data)
    wait_until(lambda: daemon.done("b/y.jpg"), 30, "the new file's thumbnails")
    daemon.looked()
    assert inodes(daemon.thumbs("b/y.jpg")) == before
    assert not any(p.exists() for p in daemon.thumbs("a/x.jpg"))  # a move, not a deletion
    assert rendered(daemon, "b/y.jpg") == 0
    assert "moved a/x.jpg -> b/y.jpg (deleted and made again): 1 source, 0 rendered" in (
        daemon.read_log()
    )
    assert daemon.stop() == 0


def test_a_folder_moved_out_and_back_in_reuses_within_the_window_and_renders_after(
    daemon: Daemon,
) -> None:
    daemon.write_config({"thumbnails": {"on_delete": "remove"}})
    daemon.start(env={"THUMBD_TEST_REUSE_WINDOW": "3"})
    drop(daemon.incoming / "album", ["p.jpg"], jpeg_bytes((120, 90), seed=8))
    daemon.recorded(done=1)
    before = inodes(daemon.thumbs("album/p.jpg"))
    os.rename(daemon.incoming / "album", daemon.tmp / "album")  # out
    wait_until(lambda: daemon.record("album/p.jpg") is None, 30, "the folder to be gone")
    assert not daemon.done("album/p.jpg")  # removed, as on_delete says
    os.rename(daemon.tmp / "album", daemon.incoming / "album")  # and back in
    wait_until(lambda: daemon.done("album/p.jpg"), 30, "its thumbnails back")
    daemon.looked()
    assert inodes(daemon.thumbs("album/p.jpg")) == before
    assert rendered(daemon, "album/p.jpg") == 1  # its first render only
    os.rename(daemon.incoming / "album", daemon.tmp / "album")
    wait_until(lambda: daemon.record("album/p.jpg") is None, 30, "the folder to be gone")
    wait_until(lambda: "the reuse window closed" in daemon.read_log(), 30, "the window to close")
    os.rename(daemon.tmp / "album", daemon.incoming / "album")
    wait_until(lambda: rendered(daemon, "album/p.jpg") == 2, 30, "a new render")
    assert daemon.stop() == 0


def test_copies_waiting_for_their_twin_at_a_sigterm_stay_pending_and_are_done_next_start(
    daemon: Daemon,
) -> None:
    daemon.write_config({"resize": {"workers": 1}, "daemon": {"shutdown_timeout": 1}})
    daemon.start(env={"THUMBD_TEST_HANG_MARKER": "HANG-HERE"})  # the first render never ends
    slow = jpeg_bytes((240, 180), seed=9, comment=b"HANG-HERE")
    names = [f"c{i:02d}.jpg" for i in range(30)]
    drop(daemon.incoming / "burst", names, slow)

    def taken() -> bool:  # every copy seen: in flight, or waiting (as settling)
        try:
            live = json.loads((daemon.tmp / ".thumbd" / "status.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(live["settling"] + live["ready"] + live["in_flight"] + live["done"] == 30)

    wait_until(taken, 30, "all 30 taken")
    assert daemon.stop(signal.SIGTERM) == 0
    assert not any(daemon.done(f"burst/{n}") for n in names)
    summary = daemon.read_log().splitlines()[-1]
    assert "◆ 30 left ◆" in summary, summary  # the copies waiting too: none dropped in silence
    daemon.start()  # without the marker's hang
    wait_until(lambda: all(daemon.done(f"burst/{n}") for n in names), 60, "every copy")
    daemon.recorded(done=30, pending=0)
    assert sum(rendered(daemon, f"burst/{n}") for n in names) == 1
    assert daemon.stop() == 0


def test_a_folder_renamed_onto_a_name_with_kept_thumbnails_moves_file_by_file(
    daemon: Daemon,
) -> None:
    """outgoing/ may hold a folder of that name already (kept thumbnails of sources deleted
    there under on_delete = "keep"): the folder cannot be one rename, its files are moved."""
    daemon.start()
    drop(daemon.incoming / "b", ["old.jpg"], jpeg_bytes((120, 90), seed=1))
    drop(daemon.incoming / "a", ["x.jpg", "y.jpg"], jpeg_bytes((120, 90), seed=2))
    daemon.recorded(done=3)
    kept = inodes(daemon.thumbs("b/old.jpg"))
    (daemon.incoming / "b" / "old.jpg").unlink()
    (daemon.incoming / "b").rmdir()
    wait_until(lambda: daemon.record("b/old.jpg") is None, 30, "the deletion")
    x = inodes(daemon.thumbs("a/x.jpg"))
    os.rename(daemon.incoming / "a", daemon.incoming / "b")
    wait_until(lambda: "moved a -> b: 2 sources, 0 rendered" in daemon.read_log(), 30, "the move")
    daemon.looked()
    assert inodes(daemon.thumbs("b/x.jpg")) == x
    assert daemon.done("b/y.jpg")
    assert inodes(daemon.thumbs("b/old.jpg")) == kept  # kept, as on_delete = "keep" says
    assert not (daemon.outgoing / "a").exists()
    assert daemon.stop() == 0


def test_a_move_across_filesystems_while_thumbd_was_stopped_reuses_by_content(
    daemon: Daemon,
) -> None:
    """Deleted here and written anew there (another inode) while thumbd was stopped: the
    start-up scan's deletion holds the thumbnails, the new file's bytes take them."""
    daemon.start()
    data = jpeg_bytes((300, 200), seed=11)
    drop(daemon.incoming / "a", ["x.jpg"], data)
    daemon.recorded(done=1)
    before = inodes(daemon.thumbs("a/x.jpg"))
    assert daemon.stop() == 0
    (daemon.incoming / "a" / "x.jpg").unlink()
    (daemon.incoming / "b").mkdir()
    (daemon.incoming / "b" / "y.jpg").write_bytes(data)
    daemon.start()
    daemon.looked()
    assert inodes(daemon.thumbs("b/y.jpg")) == before
    assert not any(p.exists() for p in daemon.thumbs("a/x.jpg"))
    assert "done b/y.jpg" not in daemon.read_log()
    assert daemon.stop() == 0


def test_status_and_metrics_count_moves_and_reuses(daemon: Daemon) -> None:
    from tests.conftest import thumbd
    from tests.integration.test_service import scrape

    daemon.write_config({"metrics": {"listen": "127.0.0.1:0"}})
    daemon.start()
    port = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", daemon.read_log())[1])
    data = jpeg_bytes((300, 200), seed=12)
    drop(daemon.incoming / "album", ["a.jpg"], jpeg_bytes((300, 200), seed=13))
    drop(daemon.incoming / "album", ["b.jpg"], jpeg_bytes((300, 200), seed=14))
    drop(daemon.incoming, ["x.jpg"], data)
    daemon.recorded(done=3)
    drop(daemon.incoming, ["copy.jpg"], data)
    os.rename(daemon.incoming / "album", daemon.incoming / "renamed")
    daemon.looked()
    metrics = scrape(f"http://127.0.0.1:{port}/metrics")
    assert metrics["thumbd_sources_moved_total"] == 2
    assert metrics["thumbd_sources_reused_total"] >= 1  # copy.jpg (and a sentinel or two)
    wait_until(
        lambda: daemon.status()["daemon"].get("moved") == 2, 10, "the moves in the live figures"
    )
    text = thumbd("status", "-c", str(daemon.config)).stdout
    assert re.search(r"this run: .*\(2 moved, \d+ reused, not rendered\)", text), text
    assert daemon.stop() == 0


def test_kept_thumbnails_of_a_deleted_source_stay_when_their_folder_is_renamed(
    daemon: Daemon,
) -> None:
    """on_delete = "keep" leaves a deleted source's thumbnails where they were; a rename of
    their folder moves the sources' thumbnails, not those (the chaos run's seed 3)."""
    daemon.start()
    drop(daemon.incoming / "a", ["gone.jpg"], jpeg_bytes((120, 90), seed=1))
    drop(daemon.incoming / "a", ["stays.jpg"], jpeg_bytes((120, 90), seed=2))
    daemon.recorded(done=2)
    kept = inodes(daemon.thumbs("a/gone.jpg"))
    stays = inodes(daemon.thumbs("a/stays.jpg"))
    (daemon.incoming / "a" / "gone.jpg").unlink()
    wait_until(lambda: daemon.record("a/gone.jpg") is None, 30, "the deletion")
    os.rename(daemon.incoming / "a", daemon.incoming / "d5")
    wait_until(lambda: "moved a -> d5: 1 source, 0 rendered" in daemon.read_log(), 30, "the move")
    daemon.looked()
    assert inodes(daemon.thumbs("d5/stays.jpg")) == stays
    assert inodes(daemon.thumbs("a/gone.jpg")) == kept
    assert not any(p.exists() for p in daemon.thumbs("d5/gone.jpg"))
    assert daemon.stop() == 0
