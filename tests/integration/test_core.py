"""The core promises, against the real daemon on real folders with real signals."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Daemon, _env, all_files, made, temp_files, thumbd, wait_until


def photo(size: tuple[int, int] = (480, 360), seed: int = 0) -> Image.Image:
    """A picture with some structure, so that JPEG sizes and resizes are realistic."""
    rnd = random.Random(seed)
    base = Image.effect_mandelbrot(size, (-2.0 + rnd.random() * 0.2, -1.2, 0.8, 1.2), 60)
    return Image.merge(
        "RGB", (base, base.rotate(90, expand=False), Image.linear_gradient("L").resize(size))
    )


def jpeg_bytes(size: tuple[int, int] = (480, 360), seed: int = 0) -> bytes:
    buf = io.BytesIO()
    photo(size, seed).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_jpegs(
    folder: Path, n: int, size: tuple[int, int] = (480, 360), prefix: str = "img"
) -> list[Path]:
    """n JPEGs of one picture, each with its own bytes (a comment with its number), so that
    each is rendered: copies of one file would share their thumbnails (output/reuse.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes(size)
    paths = []
    for i in range(n):
        p = folder / f"{prefix}{i:04d}.jpg"
        p.write_bytes(data[:2] + b"\xff\xfe\x00\x0a" + b"%08d" % i + data[2:])
        paths.append(p)
    return paths


def done_lines(log: str, rel: str) -> int:
    return len(re.findall(rf"done {re.escape(rel)}: ", log))


def test_chunked_writer_gives_the_same_thumbnails_as_the_complete_file(daemon: Daemon) -> None:
    daemon.start()
    data = jpeg_bytes((900, 600), seed=3)
    (daemon.incoming / "ref").mkdir()
    shutil.copyfile(_stage(daemon, data), daemon.incoming / "ref" / "x.jpg")
    target = daemon.incoming / "x.jpg"
    chunks = [data[i * len(data) // 20 : (i + 1) * len(data) // 20] for i in range(20)]
    with target.open("wb") as f:
        for i, chunk in enumerate(chunks):
            f.write(chunk)
            f.flush()
            # 3 s in all, unevenly, as a network stalls: some gaps outlast settle_seconds,
            # so only the missing close event tells that the file is not complete yet. (This
            # sleep paces the writer; it waits for nothing.)
            time.sleep(0.05 if i % 2 else 0.25)
    wait_until(lambda: daemon.done("x.jpg") and daemon.done("ref/x.jpg"), 30, "both thumbnail sets")
    for mine, ref in zip(daemon.thumbs("x.jpg"), daemon.thumbs("ref/x.jpg"), strict=False):
        assert mine.read_bytes() == ref.read_bytes()
    status = daemon.status()
    assert status["failed"] == 0 and status["failures"] == []
    log = daemon.read_log()
    # Taken once, complete: rendered, or given ref/x.jpg's thumbnails (the same bytes).
    assert done_lines(log, "x.jpg") + log.count("reused x.jpg:") == 1
    assert "failed x.jpg" not in log, "a partial file was taken"


def _stage(daemon: Daemon, data: bytes) -> Path:
    staged = daemon.tmp / "staged.jpg"
    staged.write_bytes(data)
    return staged


@pytest.mark.skipif(
    shutil.which("rsync") is None, reason="rsync is not installed (make system-deps)"
)
def test_rsync_files_are_processed_once_and_temp_names_never(daemon: Daemon) -> None:
    daemon.start()
    src = daemon.tmp / "src"
    for i in range(30):
        (src).mkdir(exist_ok=True)
        (src / f"r{i:02d}.jpg").write_bytes(jpeg_bytes((320, 240), seed=i))
    subprocess.run(["rsync", "-a", f"{src}/", f"{daemon.incoming}/sync/"], check=True)
    wait_until(
        lambda: all(daemon.done(f"sync/r{i:02d}.jpg") for i in range(30)), 60, "30 rsynced files"
    )
    daemon.looked()  # taken in all rsync's renames and temp names, and rendered what it took
    log = daemon.read_log()
    for i in range(30):
        assert done_lines(log, f"sync/r{i:02d}.jpg") == 1
    names = [p.name for p in made(daemon.outgoing)]
    assert len(names) == 90
    assert not [n for n in names if n.startswith(".")]


def test_many_files_moved_in_from_outside_are_all_processed(daemon: Daemon) -> None:
    daemon.start()
    outside = daemon.tmp / "outside"
    paths = write_jpegs(outside, 300, (160, 120))
    target = daemon.incoming / "moved"
    target.mkdir()
    subprocess.run(["mv", *map(str, paths), str(target)], check=True)
    wait_until(lambda: all(daemon.done(f"moved/{p.name}") for p in paths), 120, "300 moved files")
    daemon.recorded(done=300)


def test_files_written_into_a_new_folder_are_not_missed(daemon: Daemon) -> None:
    daemon.start()
    data = jpeg_bytes((200, 150))
    deep = daemon.incoming / "new" / "deeper"
    deep.mkdir(parents=True)
    for i in range(50):
        (deep / f"n{i}.jpg").write_bytes(data)
    wait_until(
        lambda: all(daemon.done(f"new/deeper/n{i}.jpg") for i in range(50)), 60, "new folder files"
    )


def test_restart_rewrites_nothing_and_a_replaced_source_is_redone(daemon: Daemon) -> None:
    write_jpegs(daemon.incoming / "a", 5)
    daemon.start()
    wait_until(lambda: all(daemon.done(f"a/img{i:04d}.jpg") for i in range(5)), 30, "first pass")
    assert daemon.stop() == 0
    before = {p: p.stat().st_mtime_ns for p in all_files(daemon.outgoing)}
    daemon.start()
    wait_until(lambda: "scan of" in daemon.read_log().split("thumbd started")[-1], 30, "the scan")
    daemon.looked()  # the scan's finds settled and anything wrongly taken rendered
    assert {p: p.stat().st_mtime_ns for p in made(daemon.outgoing)} == before
    old = daemon.thumbs("a/img0002.jpg")[0].read_bytes()
    replacement = daemon.tmp / "replacement.jpg"
    replacement.write_bytes(jpeg_bytes((480, 360), seed=42))
    os.replace(replacement, daemon.incoming / "a" / "img0002.jpg")
    wait_until(lambda: daemon.thumbs("a/img0002.jpg")[0].read_bytes() != old, 30, "new thumbnails")
    others = [p for p in before if "img0002" not in p.name]
    assert all(p.stat().st_mtime_ns == before[p] for p in others)


def test_bad_files_fail_with_reasons_and_the_daemon_goes_on(daemon: Daemon) -> None:
    daemon.start()
    good = jpeg_bytes()
    (daemon.incoming / "zero.jpg").write_bytes(b"")
    (daemon.incoming / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (daemon.incoming / "garbage.jpg").write_bytes(os.urandom(5000))
    (daemon.incoming / "notes.txt").write_text("not an image, not named as one")
    for i in range(3):
        (daemon.incoming / f"good{i}.jpg").write_bytes(good)
    wait_until(lambda: daemon.status()["failed"] == 3, 30, "three failures")
    wait_until(lambda: all(daemon.done(f"good{i}.jpg") for i in range(3)), 30, "the good ones")
    status = daemon.status()
    reasons = {f["source"]: f["reason"] for f in status["failures"]}
    assert set(reasons) == {"zero.jpg", "truncated.jpg", "garbage.jpg"}
    assert all(reasons.values())
    assert "empty" in reasons["zero.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert status["done"] == 3 and status["pending"] == 0
    assert daemon.proc is not None and daemon.proc.poll() is None
    daemon.looked()  # a failure is not retried while the file is unchanged
    assert daemon.read_log().count("failed garbage.jpg") == 1


def test_sigterm_drains_and_a_restart_completes_the_rest(daemon: Daemon) -> None:
    daemon.write_config({"resize": {"workers": 1}})
    daemon.start()
    paths = write_jpegs(daemon.tmp / "burst", 100, (1600, 1200))
    for p in paths:
        os.rename(p, daemon.incoming / p.name)
    wait_until(lambda: "done img" in daemon.read_log(), 30, "the first file")
    assert daemon.stop(signal.SIGTERM) == 0
    # The drain ended with the files in flight, not at shutdown_timeout (no clock: under load
    # even a quick drain takes its time).
    assert "still running after" not in daemon.read_log()
    assert temp_files(daemon.outgoing) == []
    done_before = sum(daemon.done(p.name) for p in paths)
    assert done_before < 100, "the burst finished before SIGTERM; nothing was queued"
    summary = daemon.read_log().splitlines()[-1]
    assert f"◆ {100 - done_before} left ◆" in summary, summary  # what stays pending, all of it
    daemon.start()
    wait_until(lambda: all(daemon.done(p.name) for p in paths), 120, "the rest after restart")


def test_sigkill_of_the_process_group_mid_burst_loses_nothing(daemon: Daemon) -> None:
    daemon.start()
    paths = write_jpegs(daemon.tmp / "burst", 120, (1200, 900))
    for p in paths:
        os.rename(p, daemon.incoming / p.name)
    wait_until(lambda: daemon.read_log().count("done img") >= 10, 30, "some progress")
    daemon.kill_group()
    daemon.start()
    # Thumbnails of sources whose record the kill lost exist already: wait for the records.
    wait_until(lambda: daemon.status()["done"] == 120, 120, "everything after restart")
    assert all(daemon.done(p.name) for p in paths)
    assert temp_files(daemon.outgoing) == []
    status = daemon.status()
    assert status["done"] == 120 and status["failed"] == 0 and status["pending"] == 0


def test_once_exit_codes(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    write_jpegs(d.incoming / "x", 4)
    ok = thumbd("once", "-c", str(d.config))
    assert ok.returncode == 0, ok.stderr
    assert all(d.done(f"x/img{i:04d}.jpg") for i in range(4))
    (d.incoming / "bad.jpg").write_bytes(b"not a jpeg at all")
    bad = thumbd("once", "-c", str(d.config))
    assert bad.returncode == 1, bad.stderr
    assert "bad.jpg" in bad.stderr
    d.config.write_text(d.config.read_text() + "\n[thumbnails]\nwidht = [100]\n")
    usage = thumbd("once", "-c", str(d.config))
    assert usage.returncode == 2
    assert "widht" in usage.stderr and str(d.config) in usage.stderr
    assert "Traceback" not in usage.stderr


def test_check_config_names_an_unknown_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[watch]\nsettle_seconds = 0.5\nbogus_key = 1\n")
    r = thumbd("check-config", "-c", str(cfg))
    assert r.returncode == 2
    assert "bogus_key" in r.stderr and str(cfg) in r.stderr and "[watch]" in r.stderr
    cfg.write_text("[thumbnails]\nquality = 101\n")
    r = thumbd("check-config", "-c", str(cfg))
    assert r.returncode == 2 and "quality" in r.stderr and "1 to 100" in r.stderr
    cfg.write_text("[thumbnails]\nwidths = [300, 100]\n")
    (tmp_path / "incoming").mkdir()  # check-config also checks the folders
    r = thumbd("check-config", "-c", str(cfg))
    assert r.returncode == 0 and "widths = [300, 100]" in r.stdout
    assert f'incoming = "{tmp_path / "incoming"}"' in r.stdout


def test_missing_incoming_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[paths]\nincoming = "nowhere"\n')
    r = thumbd("run", "-c", str(cfg))
    assert r.returncode == 2
    assert "nowhere" in r.stderr and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_a_second_daemon_on_the_same_state_refuses(daemon: Daemon) -> None:
    daemon.start()
    r = thumbd("run", "-c", str(daemon.config), timeout=30)
    assert r.returncode == 2 and "another thumbd" in r.stderr


def test_sigint_drains_too_and_a_second_signal_exits_at_once(daemon: Daemon) -> None:
    # A source that hangs its worker keeps the drain waiting, however fast the machine.
    hang = "THUMBD-TEST-HANG-MARKER"
    daemon.write_config({"resize": {"workers": 1}})
    daemon.start(env={"THUMBD_TEST_HANG_MARKER": hang})
    names = ["stuck.jpg", *(f"after{i}.jpg" for i in range(3))]
    for name in names:
        data = jpeg_bytes() + (hang.encode() if name == "stuck.jpg" else b"")
        (daemon.tmp / name).write_bytes(data)  # the marker sits after the JPEG's end
        os.rename(daemon.tmp / name, daemon.incoming / name)
        if name == "stuck.jpg":
            wait_until(lambda: daemon.status()["daemon"].get("in_flight"), 30, "it in flight")
    daemon.send(signal.SIGINT)
    wait_until(lambda: "SIGINT: draining (" in daemon.read_log(), 30, "the drain to start")
    assert "SIGINT: draining (0 in flight)" not in daemon.read_log()
    daemon.send(signal.SIGINT)
    # Wait rather than stop(): stop() would send a SIGTERM right behind the SIGINT, and under
    # load the daemon may take that one as the second signal (exit 143).
    assert daemon.proc is not None and daemon.proc.wait(timeout=10) == 128 + signal.SIGINT
    assert "second signal, exiting now" in daemon.read_log()
    assert not daemon.done("stuck.jpg")
    # The worker stuck on it went too: nothing else would ever stop it (nor the fork server
    # it keeps alive) once the daemon is gone.
    wait_until(lambda: not _holding(daemon.incoming / "stuck.jpg"), 30, "no worker left on it")
    daemon.start()  # without the marker: the stuck file renders now
    wait_until(lambda: all(daemon.done(n) for n in names), 60, "every file")
    assert daemon.stop(signal.SIGINT) == 0
    assert temp_files(daemon.outgoing) == []


def _once_on_a_terminal(d: Daemon, *args: str) -> bytes:
    """`thumbd once` with its stderr on a pseudo-terminal; what the terminal received."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "thumbd", "once", "-c", str(d.config), *args],
        stderr=follower,
        stdout=subprocess.DEVNULL,
        env=_env(),
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    return out


def _batch_with_one_kept(d: Daemon) -> None:
    write_jpegs(d.incoming, 5)
    # One more whose thumbnails are there already (a lost state): kept, not rendered, but
    # looked at all the same: the count ends at 6/6, not 5/6.
    (d.incoming / "kept.jpg").write_bytes(jpeg_bytes())
    d.outgoing.mkdir()
    for width in (200, 64, 32):
        (d.outgoing / f"kept_{width}.jpg").write_bytes(jpeg_bytes())


def test_once_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    _batch_with_one_kept(d)
    out = _once_on_a_terminal(d)
    shown = [_on_screen(line) for line in out.decode().split("\n")]
    log_lines = [line for line in shown if re.match(r"\d{4}-\d\d-\d\d ", line)]
    bar = [line for line in shown if line and line not in log_lines]
    # The bar (tqdm's meter) is left showing at the end, on a line of its own: percent, count,
    # rate and failures; the per-file lines are left out of its way, the others stay.
    assert len(bar) == 1 and bar[0].startswith("thumbd: 100%"), bar
    assert "| 6/6 [" in bar[0] and "files/s" in bar[0] and "0 failed]" in bar[0], bar
    assert not [line for line in log_lines if " done img" in line or " kept " in line]
    assert any("thumbd started" in line for line in log_lines)
    assert all("thumbd: " not in line.split(" INFO ")[0] for line in log_lines)


def test_once_verbose_shows_each_file_above_the_bar(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    _batch_with_one_kept(d)
    out = _once_on_a_terminal(d, "-v")
    shown = [_on_screen(line) for line in out.decode().split("\n")]
    log_lines = [line for line in shown if re.match(r"\d{4}-\d\d-\d\d ", line)]
    # The log goes to the same terminal: each of its lines shows alone, the bar stays below
    # them (not glued in front of the next log line), and is left showing at the end.
    assert len([line for line in log_lines if " done img" in line]) == 5
    assert any(" kept kept.jpg" in line for line in log_lines)
    assert all("thumbd: " not in line.split(" INFO ")[0] for line in log_lines)
    bar = [line for line in shown if line and line not in log_lines]
    assert len(bar) == 1 and "| 6/6 [" in bar[0], bar


def test_once_off_a_terminal_logs_its_progress_every_few_seconds(tmp_path: Path) -> None:
    hang = "THUMBD-TEST-HANG-MARKER"
    d = Daemon(tmp_path, {"resize": {"timeout": 7}})
    write_jpegs(d.incoming, 1)
    (d.incoming / "stuck.jpg").write_bytes(jpeg_bytes() + hang.encode())
    result = subprocess.run(
        [sys.executable, "-m", "thumbd", "once", "-c", str(d.config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(), "THUMBD_TEST_HANG_MARKER": hang},
    )
    assert result.returncode == 1  # the stuck file timed out: failed
    assert "progress: 1 of 2 files (50%)" in result.stderr, result.stderr
    assert ", 0 failed" in result.stderr


def test_once_quiet_says_only_what_went_wrong(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    write_jpegs(d.incoming, 2)
    (d.incoming / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = subprocess.run(
        [sys.executable, "-m", "thumbd", "once", "-q", "-c", str(d.config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines and all(" INFO " not in line for line in lines), result.stderr
    assert any("failed broken.jpg" in line for line in lines), result.stderr
    assert (d.outgoing / "img0000_200.jpg").exists()


def test_once_stopped_before_the_end_exits_1(tmp_path: Path) -> None:
    """`thumbd once && publish` must not go on when a SIGTERM or Ctrl-C left files undone."""
    hang = "THUMBD-TEST-HANG-MARKER"
    d = Daemon(tmp_path, {"daemon": {"shutdown_timeout": 1}})
    (d.incoming / "stuck.jpg").write_bytes(jpeg_bytes() + hang.encode())
    write_jpegs(d.incoming, 1)
    with d.log.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "thumbd", "once", "-c", str(d.config)],
            stdout=log,
            stderr=log,
            env={**_env(), "THUMBD_TEST_HANG_MARKER": hang},
        )
    wait_until(lambda: "done img0000.jpg" in d.read_log(), 60, "the other file")
    # A batch under nohup has no progress line: `thumbd status` shows its live figures.
    # This run's counts are read from the database, the rest from figures up to 2 s old.
    live = wait_until(lambda: _live(d.config), 30, "live figures of thumbd once, in flight")
    assert live["pid"] == proc.pid and live["in_flight"] == 1 and live["done"] == 1, live
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 1, d.read_log()
    assert "stopped (SIGTERM)" in d.read_log() and "1 left" in d.read_log()
    assert "not done: stopped by SIGTERM" in d.read_log()
    assert not d.done("stuck.jpg")


def _holding(path: Path) -> list[int]:
    """The processes that have `path` open."""
    holders = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir()):
                holders.append(int(fd_dir.parent.name))
    return holders


def _live(config: Path) -> dict[str, Any] | None:
    r = thumbd("status", "--json", "-c", str(config))
    live: dict[str, Any] = json.loads(r.stdout)["daemon"]
    return live if "uptime" in live and live["done"] and live["in_flight"] else None


def _on_screen(line: str) -> str:
    """What a terminal shows of one line: a carriage return goes back to the start, and later
    characters overwrite earlier ones; trailing blanks are not seen."""
    screen: list[str] = []
    column = 0
    for char in line:
        if char == "\r":
            column = 0
            continue
        if column < len(screen):
            screen[column] = char
        else:
            screen.append(char)
        column += 1
    return "".join(screen).rstrip()
