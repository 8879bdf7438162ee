"""How real writers fill incoming/: odd names, folders moved away, permissions fixed later.

Each test runs the real daemon as a subprocess on real folders and changes them with the same
system calls `cp`, `mv`, `rm` and `chmod` make.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, all_files, wait_until
from tests.integration.test_robustness import as_ordinary_user, drop, jpeg_bytes


def test_any_utf8_name_works_and_one_that_is_not_is_skipped_with_a_warning(
    daemon: Daemon,
) -> None:
    data = jpeg_bytes((300, 200))
    early = os.fsdecode(b"caf\xe9.jpg")  # Latin-1, from an old archive: found by the scan
    (daemon.incoming / early).write_bytes(data)
    folder = daemon.incoming / os.fsdecode(b"alb\xfcm")
    folder.mkdir()
    (folder / "x.jpg").write_bytes(data)
    daemon.start()
    late = os.fsdecode(b"late\xff.jpg")
    forged = "x\n2001-01-01 00:00:00,000 ERROR   [main] \x1b[2Jforged.jpg"  # a name, one line
    drop(daemon.incoming, [late, "good.jpg"], data)  # arrives while it runs: an event
    drop(daemon.incoming, [forged], jpeg_bytes((300, 200), seed=1))  # rendered: "done ..."
    staged = daemon.tmp / "staged"
    (staged / "y.jpg").parent.mkdir()
    (staged / "y.jpg").write_bytes(data)
    staged.rename(daemon.incoming / os.fsdecode(b"ma\xdfe"))  # a folder moved in
    wait_until(lambda: daemon.done("good.jpg") and daemon.done(forged), 30, "good names")
    (daemon.incoming / early).unlink()  # a deletion event for a name never recorded
    (daemon.incoming / late).rename(daemon.incoming / "late.jpg")  # renamed: now it is work
    wait_until(lambda: daemon.done("late.jpg"), 30, "the renamed file")
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.read_log()
    log = daemon.read_log()
    assert "Traceback" not in log
    for name in (r"caf\xe9.jpg", r"alb\xfcm", r"late\xff.jpg", r"ma\xdfe"):
        assert f"incoming/{name}: its name is not valid UTF-8" in log, log
    assert r"done x\n2001-01-01 00:00:00,000 ERROR   [main] \x1b[2Jforged.jpg: " in log
    assert not any(line.startswith("2001") or "\x1b" in line for line in log.splitlines())
    made = {p.relative_to(daemon.outgoing).as_posix() for p in all_files(daemon.outgoing)}
    stems = ("good", "late", forged.removesuffix(".jpg"))
    assert made == {f"{s}_{w}.jpg" for s in stems for w in (200, 64, 32)}
    daemon.recorded(done=3, failed=0, pending=0)
    assert daemon.stop() == 0


def test_a_folder_moved_out_is_gone_at_once_and_what_happens_to_it_later_changes_nothing(
    daemon: Daemon,
) -> None:
    daemon.write_config({"thumbnails": {"on_delete": "remove"}})  # rescans only every 600 s
    data = jpeg_bytes((300, 200))
    drop(daemon.incoming / "album" / "day 1", ["a.jpg"], data)
    drop(daemon.incoming / "album", ["b.jpg"], data)
    drop(daemon.incoming / "trip", ["c.jpg"], data)
    drop(daemon.incoming, ["stay.jpg"], data)
    daemon.start()
    rels = ["album/day 1/a.jpg", "album/b.jpg", "trip/c.jpg", "stay.jpg"]
    wait_until(lambda: all(daemon.done(r) for r in rels), 30, "the first pass")
    (daemon.incoming / "album").rename(daemon.tmp / "archive")  # mv incoming/album ~/archive
    (daemon.incoming / "trip").rename(daemon.incoming / "trip 2024")  # renamed inside
    wait_until(lambda: daemon.done("trip 2024/c.jpg"), 30, "the renamed folder's file")
    wait_until(lambda: not (daemon.outgoing / "album").exists(), 30, "the moved folder's")
    wait_until(lambda: not (daemon.outgoing / "trip").exists(), 30, "the old folder's")
    moved = "album moved away: forgot its 2 sources (and removed their thumbnails)"
    wait_until(lambda: moved in daemon.read_log(), 30, "the log line (after the removal)")
    drop(daemon.incoming / "album", ["b.jpg"], data)  # the next upload, under the same name
    wait_until(lambda: daemon.done("album/b.jpg"), 30, "the new album")
    # The archived folder's old watch still reports its files under their old names.
    (daemon.tmp / "archive" / "b.jpg").unlink()
    drop(daemon.incoming, ["sentinel.jpg"], data)  # its events come after the deletion's
    wait_until(lambda: daemon.done("sentinel.jpg"), 30, "the sentinel")
    assert daemon.done("album/b.jpg") and daemon.done("stay.jpg")
    assert "removed album/b.jpg" not in daemon.read_log()
    daemon.recorded(done=4, failed=0, pending=0)
    assert daemon.stop() == 0


def inotify_watches(daemon: Daemon) -> int:
    """The inotify watches the daemon process holds, as the kernel counts them."""
    assert daemon.proc is not None
    fds = Path(f"/proc/{daemon.proc.pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == "anon_inode:inotify":
                info = Path(f"/proc/{daemon.proc.pid}/fdinfo/{fd.name}").read_text()
                count += info.count("inotify wd:")
    return count


def test_folders_moved_out_give_their_watches_back_by_the_next_rescan(daemon: Daemon) -> None:
    daemon.write_config({"watch": {"rescan_interval": 1.0}})
    for i in range(5):
        (daemon.incoming / "batch" / f"d{i}").mkdir(parents=True)
    daemon.start()
    wait_until(lambda: inotify_watches(daemon) == 7, 30, "incoming/, batch/ and d0-d4 watched")
    (daemon.incoming / "batch").rename(daemon.tmp / "archive")  # kept on the same disk
    wait_until(lambda: inotify_watches(daemon) == 1, 30, "the archived folders' watches gone")
    drop(daemon.incoming, ["after.jpg"], jpeg_bytes((300, 200)))
    wait_until(lambda: daemon.done("after.jpg"), 30, "a file after the new watches")
    assert daemon.stop() == 0


def test_a_folder_moved_in_is_complete_at_once_and_incoming_may_be_a_symlink(
    daemon: Daemon,
) -> None:
    link = daemon.tmp / "incoming-link"  # /srv/thumbd/incoming -> /mnt/photos, say
    link.symlink_to(daemon.incoming)
    daemon.write_config(
        {"paths": {"incoming": str(link)}, "watch": {"quiet_seconds": 120}}  # rescan: 600 s
    )
    daemon.start()
    staged = daemon.tmp / "card"
    for rel in ("DCIM/100/a.jpg", "DCIM/100/b.jpg", "DCIM/c.jpg"):
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        (staged / rel).write_bytes(jpeg_bytes((300, 200)))
    staged.rename(daemon.incoming / "card")  # mv ~/card incoming/: no file waits for quiet
    drop(daemon.incoming, ["d.jpg"], jpeg_bytes((300, 200)))
    rels = ["card/DCIM/100/a.jpg", "card/DCIM/100/b.jpg", "card/DCIM/c.jpg", "d.jpg"]
    wait_until(lambda: all(daemon.done(r) for r in rels), 60, "the folders' files")
    assert "symbolic link" not in daemon.read_log()
    assert daemon.stop() == 0


def test_a_done_source_overwritten_with_a_broken_file_keeps_its_thumbnails_its_own(
    daemon: Daemon,
) -> None:
    daemon.write_config({"thumbnails": {"on_delete": "remove"}})
    drop(daemon.incoming, ["x.jpg", "y.jpg"], jpeg_bytes((300, 200)))
    daemon.start()
    wait_until(lambda: daemon.done("x.jpg") and daemon.done("y.jpg"), 30, "the first pass")
    (daemon.incoming / "x.jpg").write_bytes(b"")  # `: > x.jpg`, a failed save, a bad upload
    wait_until(lambda: daemon.status()["failed"] == 1, 30, "the failure")
    assert daemon.done("x.jpg")  # the earlier thumbnails stay while the source is broken
    (daemon.incoming / "x.jpg").unlink()  # and go with it (on_delete = "remove")
    wait_until(lambda: not any(t.exists() for t in daemon.thumbs("x.jpg")), 30, "x's removal")
    made = {p.relative_to(daemon.outgoing).as_posix() for p in all_files(daemon.outgoing)}
    assert made == {f"y_{w}.jpg" for w in (200, 64, 32)}
    assert daemon.stop() == 0


def test_a_folder_thumbd_could_not_read_is_taken_and_watched_once_it_is_chmodded(
    daemon: Daemon,
) -> None:
    if os.geteuid() == 0:  # root meets file permissions only without its DAC capabilities
        if shutil.which("setpriv") is None:
            pytest.skip(reason="setpriv (util-linux) is not installed")
        caps = "-dac_override,-dac_read_search"
        daemon.prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    data = jpeg_bytes((300, 200))
    early = daemon.incoming / "early"  # there before the start: the scan cannot list it
    (early / "a.jpg").parent.mkdir()
    (early / "a.jpg").write_bytes(data)
    early.chmod(0o300)
    daemon.start()
    late = daemon.incoming / "late"  # made while it runs: watchdog cannot watch it
    late.mkdir(mode=0o300)
    (late / "b.jpg").write_bytes(data)
    wait_until(lambda: "cannot list" in daemon.read_log(), 30, "the scan's warning")
    try:
        early.chmod(0o755)  # the owner fixes it, as `chmod -R a+rX` would
        wait_until(lambda: daemon.done("early/a.jpg"), 30, "the file in the fixed folder")
        late.chmod(0o755)
        wait_until(lambda: daemon.done("late/b.jpg"), 30, "the file in the other one")
        (late / "c.jpg").write_bytes(data)  # its watch works: no rescan needed
        wait_until(lambda: daemon.done("late/c.jpg"), 30, "a new file there")
    finally:
        early.chmod(0o755)
        late.chmod(0o755)
    log = daemon.read_log()
    assert "early can be read now; watching it" in log and "late can be read now" in log
    assert daemon.stop() == 0


def test_once_over_a_folder_it_cannot_read_names_it_and_exits_1(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    (d.incoming / "good.jpg").write_bytes(jpeg_bytes((300, 200)))
    private = d.incoming / "private"
    private.mkdir()
    (private / "p.jpg").write_bytes(jpeg_bytes((300, 200)))
    private.chmod(0)
    try:
        r = as_ordinary_user("once", "-c", str(d.config))
    finally:
        private.chmod(0o755)
    assert r.returncode == 1, r.stderr
    assert "images in folders that could not be read (permissions?): private" in r.stderr
    assert d.done("good.jpg")


# -- a file still open for writing ------------------------------------------------------------


def live_after(daemon: Daemon, since: float) -> dict[str, Any]:
    """The first status.json the daemon writes after `since` (time.time())."""
    path = daemon.tmp / ".thumbd" / "status.json"

    def written() -> dict[str, Any] | None:
        try:
            live: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return live if live.get("updated", 0) > since else None

    found: dict[str, Any] = wait_until(written, 30, "a status written after that")
    return found


def tries(daemon: Daemon, rel: str) -> tuple[int, int]:
    log = daemon.read_log()
    return log.count(f"done {rel}:"), log.count(f"failed {rel}:")


def test_a_file_its_writer_holds_open_is_taken_only_once_it_is_closed(daemon: Daemon) -> None:
    # A writer pausing 3.5 s between chunks, longer than quiet_seconds (1 s): the file is
    # held, not taken half-written, failed and retried.
    data = jpeg_bytes((900, 600))
    chunks = [data[i : i + len(data) // 3 + 1] for i in range(0, len(data), len(data) // 3 + 1)]
    daemon.start()
    with (daemon.incoming / "slow.jpg").open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
            f.flush()
            wrote = time.time()
            time.sleep(3.5)  # the writer's own pace
            live = live_after(daemon, wrote + 1.5)  # quiet_seconds and settling are over
            assert (live["settling"], live["ready"], live["in_flight"]) == (1, 0, 0), live
            assert daemon.record("slow.jpg") is None
    wait_until(lambda: daemon.done("slow.jpg"), 30, "the file once closed")
    daemon.recorded(done=1, failed=0)
    assert tries(daemon, "slow.jpg") == (1, 0)


def test_readers_never_hold_a_file_and_a_closed_writer_holds_it_no_longer(
    daemon: Daemon,
) -> None:
    daemon.write_config({"watch": {"quiet_seconds": 30.0}})  # only a close takes it quickly
    daemon.start()
    data = jpeg_bytes((300, 200))
    (daemon.incoming / "read.jpg").write_bytes(data)
    reader = (daemon.incoming / "read.jpg").open("rb")  # a viewer keeps it open
    try:
        wait_until(lambda: daemon.done("read.jpg"), 15, "a file a reader holds open")
        # Written in place while a reader has it open too: the writer's close is what counts.
        other_data = jpeg_bytes((300, 200), seed=2)  # not a copy of read.jpg: rendered
        with (daemon.incoming / "both.jpg").open("wb") as writer:
            writer.write(other_data[:100])
            writer.flush()
            with (daemon.incoming / "both.jpg").open("rb") as early:
                writer.write(other_data[100:])
                writer.flush()
                other = (daemon.incoming / "both.jpg").open("rb")
                early.read()
        wait_until(lambda: daemon.done("both.jpg"), 15, "a file its writer closed")
        other.close()
    finally:
        reader.close()
    assert tries(daemon, "both.jpg") == (1, 0)
    daemon.recorded(done=2, failed=0)


def test_writers_open_in_a_folder_moved_away_or_an_old_incoming_hold_nothing(
    daemon: Daemon,
) -> None:
    daemon.write_config({"watch": {"rescan_interval": 1.0}})
    data = jpeg_bytes((300, 200))
    (daemon.incoming / "album").mkdir()  # watched from the start: its opens are seen
    daemon.start()
    away = (daemon.incoming / "album" / "x.jpg").open("wb")
    away.write(data[:200])
    away.flush()
    (daemon.incoming / "album").rename(daemon.tmp / "archive")  # its writer still at work
    # The folder comes back under its name after its watches were renewed: its file arrives
    # complete (a folder moved in), whatever the writer still does to it.
    wait_until(lambda: "renewing its watches" in daemon.read_log(), 30, "the new observer")
    away.write(data[200:])
    away.close()
    (daemon.tmp / "archive").rename(daemon.incoming / "album")
    wait_until(lambda: daemon.done("album/x.jpg"), 15, "the file of the folder moved back")
    # A writer open in incoming/ as a reload moves incoming/ elsewhere.
    other = daemon.tmp / "elsewhere-in"
    other.mkdir()
    old = (daemon.incoming / "y.jpg").open("wb")
    old.write(data[:200])
    old.flush()
    daemon.write_config({"watch": {"quiet_seconds": 30.0}, "paths": {"incoming": str(other)}})
    daemon.send(signal.SIGHUP)
    wait_until(lambda: "reloaded" in daemon.read_log(), 30, "the reload")
    old.write(data[200:])
    old.close()
    (other / "y.jpg").write_bytes(data)  # the same name, closed at once
    wait_until(lambda: daemon.done("y.jpg"), 15, "the file in the new incoming/")
    daemon.idle()  # nothing left settling: no hold behind


def test_a_decode_that_fails_moments_after_a_write_is_tried_again_once_it_settles(
    daemon: Daemon,
) -> None:
    # Polling sees no opens or closes: a writer pausing longer than quiet_seconds has its
    # file taken half-written. That failure is not recorded; the finished file is rendered.
    daemon.write_config({"watch": {"polling": True}})
    data = jpeg_bytes((900, 600))
    again = "modified moments ago: trying it again once it settles"
    daemon.start()
    with (daemon.incoming / "paused.jpg").open("wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        wait_until(lambda: "paused.jpg: " in daemon.read_log(), 30, "the half-written decode")
        assert again in daemon.read_log() and daemon.record("paused.jpg") is None
        f.write(data[len(data) // 2 :])
    wait_until(lambda: daemon.done("paused.jpg"), 30, "the finished file")
    assert tries(daemon, "paused.jpg") == (1, 0)
    # A file broken for good fails on its second try, once it has not changed for a while.
    (daemon.incoming / "cut.jpg").write_bytes(data[: len(data) // 2])
    wait_until(lambda: daemon.record("cut.jpg") == "failed", 40, "the cut file's failure")
    spared = [
        line for line in daemon.read_log().splitlines() if "cut.jpg" in line and again in line
    ]
    assert len(spared) == 1 and tries(daemon, "cut.jpg") == (0, 1)
    daemon.recorded(done=1, failed=1)
