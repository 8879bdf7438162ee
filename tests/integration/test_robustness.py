"""Never lose a file: crashes, dead workers, floods, full disks and hostile inputs.

Every test runs the real daemon (or `thumbd once`) as a subprocess on real folders. Faults are
real too: SIGKILL of the process group and of a worker, a tmpfs that fills up, an inotify queue
that overflows behind a stalled daemon, a user namespace with a tiny watch limit, capabilities
dropped so that root meets file permissions. None of them changes anything machine-wide, so
these tests can run beside others. Only a decoder that crashes or hangs is simulated, through
the test-only markers of thumbd/testhooks.py (no real input reliably crashes Pillow), exactly
as a native crash (SIGABRT) or hang looks from outside.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import random
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests import images
from tests.conftest import Daemon, _env, all_files, made, temp_files, thumbd, wait_until
from tests.httpserver import Body, Steps, serving
from tests.httpserver import status as http_status

CRASH = "THUMBD-TEST-CRASH-MARKER"
HANG = "THUMBD-TEST-HANG-MARKER"


# ---------------------------------------------------------------------------------------------
# Helpers


def jpeg_bytes(size: tuple[int, int], seed: int = 0, comment: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    params: dict[str, object] = {"quality": 85}
    if comment is not None:
        params["comment"] = comment
    images.natural(size, seed).save(buf, "JPEG", **params)
    return buf.getvalue()


def drop(folder: Path, names: list[str], data: bytes, *, unique: bool = False) -> list[Path]:
    """Write files outside incoming/ and rename them in: each arrives complete, at once.
    `unique`: each with its name after the image's end, so that none is a copy of another
    (a copy is given its twin's thumbnails, not rendered: output/reuse.py)."""
    staging = next(p for p in folder.parents if (p / "incoming").is_dir()) / "staging"
    staging.mkdir(exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        (staging / name).write_bytes(data + name.encode() if unique else data)
        os.rename(staging / name, folder / name)
        paths.append(folder / name)
    return paths


def done_names(log: str) -> list[str]:
    """Every source the log reports done (rendered), kept (thumbnails already there) or
    reused (a copy given its twin's thumbnails)."""
    return re.findall(r"(?:done|kept|reused) (\S+):", log)


def wait_slowly(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """wait_until for expensive checks (a big log): once a second, not twenty times."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(1.0)


def failures(daemon: Daemon) -> dict[str, str]:
    return {f["source"]: f["reason"] for f in daemon.status()["failures"]}


def valid_image(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


def mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in all_files(root)}


def db_integrity(daemon: Daemon) -> str:
    db = sqlite3.connect(daemon.tmp / ".thumbd" / "thumbd.db")
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
    return found


def holds_open(daemon: Daemon, name: str) -> bool:
    """True when a worker has `name` open (it is decoding it)."""
    return any(source_open_in(pid) == name for pid in workers_of(daemon))


def source_open_in(pid: int) -> str | None:
    """The name of the image process `pid` has open, if any."""
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if "/incoming/" in target:
                    return target.rsplit("/", 1)[1]
    return None


def workers_of(daemon: Daemon) -> list[int]:
    """Worker processes: children of the fork server, which is a child of the daemon."""
    assert daemon.proc is not None
    return [w for c in children(daemon.proc.pid) for w in children(c)]


def zero_png(width: int, height: int, *, rgba: bool = False) -> bytes:
    """A real, valid PNG of black pixels: tiny on disk, huge in memory."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    bpp, colour = (4, 6) if rgba else (3, 2)
    c = zlib.compressobj(1)
    block = b"\0" * (1 + width * bpp) * 100
    rows = [c.compress(block) for _ in range(height // 100)]
    rows += [c.compress(b"\0" * (1 + width * bpp) * (height % 100)), c.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(rows))
        + chunk(b"IEND", b"")
    )


@contextlib.contextmanager
def sysctl(path: str, value: int) -> Iterator[None]:
    old = Path(path).read_text().strip()
    try:
        Path(path).write_text(f"{value}\n")
    except OSError as e:
        why = f"cannot set {path} ({e.strerror}): needs root outside a locked container"
        pytest.skip(reason=why)
    try:
        yield
    finally:
        Path(path).write_text(f"{old}\n")


def drop_dac_capabilities() -> None:
    """preexec_fn: take CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of the bounding set, so
    that root after exec meets file permissions like anyone else."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(97)


def as_ordinary_user(*args: str) -> subprocess.CompletedProcess[str]:
    """`thumbd ARGS` with file permissions enforced (root without its DAC capabilities)."""
    r = subprocess.run(
        [sys.executable, "-m", "thumbd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        preexec_fn=drop_dac_capabilities if os.geteuid() == 0 else None,
    )
    if r.returncode == 97:
        why = "cannot drop CAP_DAC_OVERRIDE here (prctl refused), so root reads anything"
        pytest.skip(reason=why)
    return r


# ---------------------------------------------------------------------------------------------
# 1. kill -9 of the whole process group, ten times, during a burst


@pytest.mark.slow
def test_ten_kill9_of_the_process_group_during_a_burst_lose_nothing(daemon: Daemon) -> None:
    daemon.write_config(
        {"thumbnails": {"widths": [64, 32]}, "resize": {"max_tasks_per_child": 1000}}
    )
    rng = random.Random(1234)
    names = [f"b{i:03d}.jpg" for i in range(500)]
    data = jpeg_bytes((800, 600))
    # The last kill comes after at most 250 of 500 files: room for a test process slowed by load.
    targets = sorted(rng.sample(range(15, 250), 7))
    daemon.start()
    drop(daemon.incoming / "burst", names, data, unique=True)  # renders, not copies, are killed
    for kill in range(10):
        if kill > 0:
            daemon.start(ready=kill % 3 != 1)  # every third kill lands during start-up
        if kill % 3 == 1:  # these sleeps place the kill at a random moment: they wait for nothing
            time.sleep(rng.uniform(0.0, 0.8))
        else:
            target = targets.pop(0)
            wait_until(
                lambda t=target: len(set(done_names(daemon.read_log()))) >= t,
                120,
                f"{target} files done",
            )
            time.sleep(rng.uniform(0.0, 0.2))
        daemon.kill_group()
    progress = len(set(done_names(daemon.read_log())))
    assert progress < 500, "the burst was over before the last kill: make it longer"
    daemon.start()
    rels = [f"burst/{n}" for n in names]
    wait_until(lambda: all(daemon.done(r, (64, 32)) for r in rels), 180, "all 500 after restarts")
    assert daemon.stop() == 0
    assert temp_files(daemon.outgoing) == []
    thumbs = all_files(daemon.outgoing)
    assert len(thumbs) == 1000 and all(valid_image(p) for p in thumbs)
    status = daemon.status()
    assert status["done"] + status["failed"] == 500
    assert status == {**status, "done": 500, "failed": 0, "pending": 0}
    assert db_integrity(daemon) == "ok"


# ---------------------------------------------------------------------------------------------
# 2. A dead worker, and a file that kills its worker every time


def test_a_worker_killed_mid_file_is_replaced_and_every_file_completes(daemon: Daemon) -> None:
    # Large widths: no shrink-on-load, so each file keeps a worker busy for a while.
    daemon.write_config({"thumbnails": {"widths": [1200, 300]}})
    daemon.start()
    names = [f"w{i:02d}.jpg" for i in range(40)]
    drop(daemon.incoming, names, jpeg_bytes((2400, 1800)))

    def kill_a_busy_worker() -> bool:
        """SIGKILL a worker while it has a source open (it is decoding it)."""
        for pid in workers_of(daemon):
            if source_open_in(pid) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(pytest.fail.Exception):
                    wait_until(lambda p=pid: f"worker {p} died" in daemon.read_log(), 30, "")
                return f"worker {pid} died (killed by SIGKILL)" in daemon.read_log()
        return False

    wait_until(kill_a_busy_worker, 60, "a worker to be killed while it decodes a file")
    wait_until(lambda: all(daemon.done(n, (1200, 300)) for n in names), 120, "all 40 files")
    log = daemon.read_log()
    assert "trying it once more" in log
    status = daemon.status()
    assert status == {**status, "done": 40, "failed": 0, "pending": 0}
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert temp_files(daemon.outgoing) == []


def test_a_file_that_crashes_its_worker_fails_after_two_attempts(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THUMBD_TEST_CRASH_MARKER", CRASH)
    daemon.start()
    # A valid JPEG: only the marker in its comment makes the worker abort, like a decoder bug.
    drop(daemon.incoming, ["killer.jpg"], jpeg_bytes((400, 300), comment=CRASH.encode()))
    names = [f"ok{i}.jpg" for i in range(12)]
    drop(daemon.incoming, names, jpeg_bytes((400, 300)))
    wait_until(lambda: "failed killer.jpg" in daemon.read_log(), 60, "the crashing file to fail")
    wait_until(lambda: all(daemon.done(n) for n in names), 60, "the other files")
    log = daemon.read_log()
    assert log.count("died (killed by SIGABRT)") == 2  # two attempts, not one, not more
    assert log.count("killer.jpg: worker crashed (killed by SIGABRT); trying it once more") == 1
    assert failures(daemon) == {"killer.jpg": "worker crashed (killed by SIGABRT)"}
    status = daemon.status()
    assert status == {**status, "done": 12, "failed": 1, "pending": 0}
    daemon.looked()  # the failure stands: the file is not retried while it is unchanged
    assert daemon.read_log().count("died (killed by SIGABRT)") == 2
    assert not daemon.thumbs("killer.jpg")[0].exists()


# ---------------------------------------------------------------------------------------------
# 3. A hostile corpus


def truncations_and_flips(fmt: str, ext: str, seed: int) -> dict[str, bytes]:
    buf = io.BytesIO()
    im = images.natural((240, 180), seed)
    (im.quantize(64) if fmt == "GIF" else im).save(buf, fmt)
    data = buf.getvalue()
    out = {
        f"{fmt.lower()}-cut{int(k * 100)}.{ext}": data[: int(len(data) * k)]
        for k in (0.1, 0.5, 0.9)
    }
    out[f"{fmt.lower()}-head.{ext}"] = data[:40]
    rng = random.Random(seed)
    for n in range(5):
        flipped = bytearray(data)
        for _ in range(8):
            i = rng.randrange(len(flipped))
            flipped[i] ^= 1 << rng.randrange(8)
        out[f"{fmt.lower()}-flip{n}.{ext}"] = bytes(flipped)
    return out


def patched_jpeg_size(width: int, height: int) -> bytes:
    data = bytearray(jpeg_bytes((64, 48)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def patched_gif_size(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    images.natural((64, 48)).quantize(16).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    desc = data.index(b"\x2c")  # image descriptor: left, top, width, height
    data[desc + 5 : desc + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def patched_tiff_size(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    images.natural((64, 48)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for n in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * n
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            fmt = "<H" if kind == 3 else "<I"
            data[entry + 8 : entry + 8 + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(data)


def hostile_corpus() -> dict[str, bytes]:
    corpus: dict[str, bytes] = {}
    for seed, (fmt, ext) in enumerate(
        [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"), ("TIFF", "tif")]
    ):
        corpus.update(truncations_and_flips(fmt, ext, seed))
    corpus.update(
        {
            # More pixels than max_pixels (100 MP), in a valid 1.4 MB file: a real bomb.
            "bomb.png": zero_png(11_000, 10_000),
            # Within max_pixels but over the worker's memory cap (RGBA: 324 MB decoded).
            "memory.png": zero_png(9000, 9000, rgba=True),
            "absurd-png.png": png_header(65_535, 65_535),
            "absurd-tall.png": png_header(1, 2_000_000_000),
            "absurd-zero.png": png_header(0, 0),
            # 90 MP: over Pillow's own default bomb limit (89.5 MP), within max_pixels: it
            # must fail as what it is (a header with no pixel data), not as a "bomb".
            "pillow-limit.png": png_header(9500, 9500),
            "absurd-jpeg.jpg": patched_jpeg_size(65_500, 65_500),
            "absurd-gif.gif": patched_gif_size(65_535, 65_535),
            "absurd-tiff.tif": patched_tiff_size(65_535, 65_535),
            "zero.jpg": b"",
            "random-small.jpg": random.Random(1).randbytes(100),
            "random.png": random.Random(2).randbytes(50_000),
            "text.jpg": b"<html><body>not an image</body></html>\n" * 20,
            "too-big.jpg": random.Random(3).randbytes(2_500_000),  # over max_file_bytes
            "hang.jpg": jpeg_bytes((200, 150), comment=HANG.encode()),
        }
    )
    for i in range(5):
        corpus[f"good{i}.jpg"] = jpeg_bytes((300, 200), seed=i)
    return corpus


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` and holds almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.slow
def test_a_hostile_corpus_ends_done_or_failed_with_reasons_and_the_daemon_lives(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THUMBD_TEST_HANG_MARKER", HANG)
    daemon.write_config(
        {"resize": {"timeout": 4.0, "max_memory_mb": 256, "max_file_bytes": 2_000_000}}
    )
    corpus = hostile_corpus()
    assert len(corpus) >= 60
    daemon.start()
    staging = daemon.tmp / "staging"
    staging.mkdir()
    for name, data in corpus.items():
        (staging / name).write_bytes(data)
    os.mkfifo(daemon.incoming / "fifo.jpg")  # not a regular file: ignored, and nothing hangs
    shutil.copytree(staging, daemon.incoming / "hostile")
    rels = {f"hostile/{n}" for n in corpus}

    def settled() -> bool:
        log = daemon.read_log()
        return all(f"done {r}:" in log or f"failed {r}:" in log for r in rels)

    wait_until(settled, 120, "every hostile file to end done or failed")
    assert daemon.proc is not None and daemon.proc.poll() is None
    status = daemon.recorded(pending=0)  # a record follows its log line
    reasons = {k.removeprefix("hostile/"): v for k, v in failures(daemon).items()}
    assert status["done"] + status["failed"] == len(corpus)
    assert all(reasons.values()), reasons
    assert all(f"good{i}.jpg" not in reasons for i in range(5))
    for name in ("bomb.png", "absurd-png.png", "absurd-tall.png", "absurd-jpeg.jpg"):
        assert "exceeds max_pixels 100000000" in reasons[name], (name, reasons[name])
    assert "too large" not in reasons["pillow-limit.png"], reasons["pillow-limit.png"]
    assert reasons["memory.png"].startswith("out of memory")
    assert "[resize] max_memory_mb = 256" in reasons["memory.png"]
    assert "max_file_bytes 2000000" in reasons["too-big.jpg"]
    assert reasons["zero.jpg"] == "empty file (0 bytes)"
    assert "cannot identify" in reasons["random.png"]
    assert reasons["hang.jpg"] == "timed out after 4 s"
    for name in ("absurd-gif.gif", "absurd-tiff.tif", "absurd-zero.png"):
        assert name in reasons
    assert temp_files(daemon.outgoing) == []
    assert all(valid_image(p) for p in all_files(daemon.outgoing))
    # Still at work afterwards.
    drop(daemon.incoming, ["after.jpg"], jpeg_bytes((300, 200)))
    wait_until(lambda: daemon.done("after.jpg"), 30, "a good file after the corpus")


# ---------------------------------------------------------------------------------------------
# 4. A flood of 20,000 files with the inotify queue overflowing

FLOOD_WRITER = """
import io, os, sys
from PIL import Image
buf = io.BytesIO()
Image.new("RGB", (16, 12), (200, 30, 30)).save(buf, "JPEG")
data = buf.getvalue()
root, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    folder = f"{root}/w{me}/d{i % 5}"
    with open(f"{folder}/f{i:05d}.jpg", "wb") as f:
        f.write(data)
"""


QUEUE_SYSCTL = "/proc/sys/fs/inotify/max_queued_events"


def watches_of(pid: int) -> int:
    """The inotify watches process `pid` holds, as the kernel reports them."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            count += text.count("inotify wd:")
    return count


def files_in(root: Path) -> int:
    """Files in the flood's folders (two levels down), counted cheaply."""
    count = 0
    for writer in os.scandir(root):
        if writer.is_dir():
            for folder in os.scandir(writer.path):
                with contextlib.suppress(OSError):
                    count += len(os.listdir(folder.path))
    return count


def make_noise(folder: Path, numbers: range) -> None:
    for i in numbers:
        (folder / f"n{i}.tmp").touch()


def test_a_file_whose_close_an_overflow_lost_is_taken_by_the_quiet_rule(daemon: Daemon) -> None:
    """A writer opens a file, the queue overflows, the writer closes it: the open reached the
    daemon, the close was lost. The overflow must be taken where it happened, behind the open
    (watchdog's in-band EventsLostEvent), not when watchdog's reader thread first warns of it,
    while the open is still on its way: an open counted after the loss was forgotten would hold
    the file for HOLD_OPEN (ten minutes)."""
    daemon.start()
    assert daemon.proc is not None
    noise = daemon.incoming / "noise"
    noise.mkdir()
    wait_until(lambda: watches_of(daemon.proc.pid) >= 2, 30, "a watch on noise/")
    events = int(Path(QUEUE_SYSCTL).read_text())
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        # The open goes in just before the queue is full (create, open, close per noise file),
        # so that watchdog reads it in the same chunk as the overflow.
        make_noise(noise, range(events // 3 - 100))
        with (daemon.incoming / "held.jpg").open("wb") as held:
            buf = io.BytesIO()
            images.natural((64, 48)).save(buf, "JPEG")
            held.write(buf.getvalue())
            held.flush()
            make_noise(noise, range(events // 3, events // 3 + 1000))  # the queue overflows
        # held.jpg's close is lost.
        for entry in os.scandir(noise):
            os.unlink(entry.path)
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    wait_until(lambda: daemon.done("held.jpg"), 60, "held.jpg, its close lost")
    assert "inotify queue overflowed: events were lost; rescanning" in daemon.read_log()
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_flood_of_20000_files_with_queue_overflow_gives_one_set_each(daemon: Daemon) -> None:
    daemon.write_config(
        {
            "thumbnails": {"widths": [16, 8]},
            "resize": {"max_tasks_per_child": 10_000},
            "watch": {"rescan_interval": 3600},  # only overflows may trigger a rescan
        }
    )
    writers, per_writer = 4, 5000
    total = writers * per_writer
    queue_size = int(Path(QUEUE_SYSCTL).read_text())
    # Each file queues at least 3 events (create, modify, close). The daemon is stopped until
    # the writers have queued more than the kernel holds, then goes on while they write the
    # rest: its observer finds an overflow, as behind any stalled reader. No global setting is
    # touched, so tests running beside this one keep their events. Only where the queue is
    # larger than the whole flood's events is it lowered, while the daemon starts (the size is
    # read when an inotify instance is made).
    enough = queue_size // 3 + 1000
    with contextlib.ExitStack() as lowered:
        if enough >= total:
            lowered.enter_context(sysctl(QUEUE_SYSCTL, 1024))
            enough = 1000
        daemon.start()
    assert daemon.proc is not None
    folders = [daemon.incoming / f"w{w}" / f"d{d}" for w in range(writers) for d in range(5)]
    for folder in folders:
        folder.mkdir(parents=True)
    # Watched before the stop: a folder made while the observer sleeps has no watch, so
    # nothing in it would be queued.
    wait_until(lambda: watches_of(daemon.proc.pid) > len(folders), 30, "watches on the folders")
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", FLOOD_WRITER, str(daemon.incoming), str(w), str(per_writer)]
            )
            for w in range(writers)
        ]
        wait_until(lambda: files_in(daemon.incoming) >= enough, 120, f"{enough} files written")
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert all(p.wait(timeout=120) == 0 for p in procs)
    # Every writer writes the same bytes: one render each at most, copies take its thumbnails.
    wait_slowly(lambda: len(done_names(daemon.read_log())) >= total, 300, f"{total} files done")
    log = daemon.read_log()
    assert "inotify queue overflowed: events were lost; rescanning" in log
    names = done_names(log)
    assert len(names) == total and len(set(names)) == total  # exactly once each
    assert "kept " not in log  # every one rendered, none taken from an earlier run
    thumbs = all_files(daemon.outgoing)
    assert len(thumbs) == 2 * total
    assert temp_files(daemon.outgoing) == []
    status = daemon.status()
    assert status == {**status, "done": total, "failed": 0, "pending": 0}


# ---------------------------------------------------------------------------------------------
# 5. A full disk


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        why = f"cannot mount a tmpfs here ({r.stderr.strip()}): needs root and mount rights"
        pytest.skip(reason=why)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """A file that takes every free page of the filesystem."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (65536, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


def test_a_full_outgoing_keeps_files_pending_and_catches_up_by_itself(daemon: Daemon) -> None:
    with tmpfs(daemon.outgoing, "2m"):
        daemon.start()
        filler = fill(daemon.outgoing)
        names = [f"f{i}.jpg" for i in range(8)]
        drop(daemon.incoming, names, jpeg_bytes((800, 600)))
        wait_until(lambda: "is full (ENOSPC)" in daemon.read_log(), 30, "the disk-full error")
        daemon.idle(("settling", "in_flight"))  # all taken: one held, the rest kept back
        status = daemon.status()
        assert status == {**status, "done": 0, "failed": 0, "pending": 8}
        leftovers = [p for p in all_files(daemon.outgoing) if p != filler]
        assert leftovers == [], "a partial or temporary file was left on the full disk"
        filler.unlink()
        wait_until(lambda: all(daemon.done(n) for n in names), 60, "catching up without restart")
        log = daemon.read_log()
        assert log.count("is full (ENOSPC)") == 1  # once a minute, not once a file
        assert "has room again; catching up" in log
        status = daemon.status()
        assert status == {**status, "done": 8, "failed": 0, "pending": 0}
        assert all(valid_image(p) for p in all_files(daemon.outgoing))
        assert daemon.read_log().count("thumbd started") == 1
        daemon.stop()


# ---------------------------------------------------------------------------------------------
# 6. Symlinks and names


def test_symlinks_are_never_followed_and_nothing_is_written_outside_outgoing(
    daemon: Daemon,
) -> None:
    outside = daemon.tmp / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(jpeg_bytes((300, 200)))
    os.symlink("/etc", daemon.incoming / "etc")
    os.symlink(outside, daemon.incoming / "outside-dir")
    os.symlink(outside / "secret.jpg", daemon.incoming / "linked.jpg")
    os.symlink("/etc/passwd", daemon.incoming / "passwd.jpg")
    # Planted in outgoing/: a folder that leads elsewhere.
    elsewhere = daemon.tmp / "elsewhere"
    elsewhere.mkdir()
    daemon.outgoing.mkdir()
    os.symlink(elsewhere, daemon.outgoing / "sub")
    drop(daemon.incoming / "sub", ["x.jpg"], jpeg_bytes((300, 200)))
    drop(daemon.incoming, ["real.jpg"], jpeg_bytes((300, 200)))
    daemon.start()
    # While it runs: new links, and a new image in a linked folder.
    os.symlink(outside / "secret.jpg", daemon.incoming / "late-link.jpg")
    (outside / "late.jpg").write_bytes(jpeg_bytes((300, 200)))
    daemon.looked()  # the new links seen, and anything taken through one rendered
    wait_until(lambda: daemon.done("real.jpg"), 30, "the real file")
    wait_until(lambda: "failed sub/x.jpg" in daemon.read_log(), 30, "the refused output folder")
    written = {p.relative_to(daemon.outgoing).as_posix() for p in made(daemon.outgoing)}
    assert written == {f"real_{w}.jpg" for w in (200, 64, 32)}
    assert list(elsewhere.iterdir()) == []
    status = daemon.status()
    assert status == {**status, "done": 2, "failed": 1, "pending": 0}  # real.jpg, the sentinel
    assert "symbolic link" in failures(daemon)["sub/x.jpg"]
    assert "secret" not in daemon.read_log()


# ---------------------------------------------------------------------------------------------
# 7. A lost or damaged state database


def test_a_deleted_or_damaged_state_database_is_rebuilt_without_regenerating(
    daemon: Daemon,
) -> None:
    names = [f"s{i}.jpg" for i in range(10)]
    drop(daemon.incoming / "a", names, jpeg_bytes((640, 480)))
    daemon.start()
    wait_until(lambda: all(daemon.done(f"a/{n}") for n in names), 60, "the first pass")
    assert daemon.stop() == 0
    before = mtimes(daemon.outgoing)
    # Replaced while stopped, with an old mtime (as `cp -p` or `rsync -a` leave it): the one
    # source whose thumbnails must be made again.
    replacement = daemon.tmp / "replacement.jpg"
    replacement.write_bytes(jpeg_bytes((640, 480), seed=9))
    old = (daemon.incoming / "a" / "s3.jpg").stat().st_mtime - 3600
    os.utime(replacement, (old, old))
    os.replace(replacement, daemon.incoming / "a" / "s3.jpg")
    daemon.delete_state()
    daemon.start()
    wait_until(lambda: daemon.status()["done"] == 10, 60, "the rebuilt state")
    log = daemon.read_log().split("thumbd started")[-1]
    assert "is missing; rebuilding it" in daemon.read_log()
    assert log.count("kept a/") == 9 and log.count("done a/s3.jpg") == 1
    after = mtimes(daemon.outgoing)
    changed = {p.name for p in before if after[p] != before[p]}
    assert changed == {"s3_200.jpg", "s3_64.jpg", "s3_32.jpg"}
    status = daemon.status()
    assert status == {**status, "done": 10, "failed": 0, "pending": 0}

    assert daemon.stop() == 0
    db = daemon.tmp / ".thumbd" / "thumbd.db"
    db.write_bytes(random.Random(5).randbytes(8192))  # damaged beyond SQLite's recognition
    daemon.start()
    wait_until(lambda: daemon.status()["done"] == 10, 60, "the state rebuilt again")
    assert "is damaged (file is not a database)" in daemon.read_log()
    assert list(db.parent.glob("thumbd.db.damaged-*"))
    assert mtimes(daemon.outgoing) == after


# ---------------------------------------------------------------------------------------------
# 8. Permissions


def test_a_reload_to_another_incoming_folder_takes_its_files(daemon: Daemon) -> None:
    daemon.start()
    other = daemon.tmp / "elsewhere-in"
    other.mkdir()
    daemon.write_config({"paths": {"incoming": str(other)}})
    daemon.send(signal.SIGHUP)
    wait_until(lambda: "reloaded" in daemon.read_log(), 30, "the reload")
    drop(other, ["moved.jpg"], jpeg_bytes((300, 200)))
    wait_until(lambda: daemon.done("moved.jpg"), 30, "a file in the new incoming folder")
    assert "symbolic link" not in daemon.read_log()


def test_an_unreadable_source_fails_with_the_reason(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    (d.incoming / "good.jpg").write_bytes(jpeg_bytes((300, 200)))
    locked = d.incoming / "locked.jpg"
    locked.write_bytes(jpeg_bytes((300, 200)))
    locked.chmod(0)
    # A folder of outgoing/ thumbd may not write to (made by hand, by root): the reason says
    # which, so that the sysadmin knows what to fix before `thumbd retry`.
    (d.incoming / "ro").mkdir()
    (d.incoming / "ro" / "x.jpg").write_bytes(jpeg_bytes((300, 200)))
    (d.outgoing / "ro").mkdir(parents=True)
    (d.outgoing / "ro").chmod(0o555)
    r = as_ordinary_user("once", "-c", str(d.config))
    assert r.returncode == 1, r.stderr
    assert d.done("good.jpg")
    assert failures(d) == {
        "locked.jpg": "permission denied reading the file",
        "ro/x.jpg": f"cannot write thumbnail in {d.outgoing / 'ro'}: Permission denied",
    }


def test_an_unreadable_or_missing_incoming_is_a_clear_error(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.incoming.chmod(0)
    try:
        r = as_ordinary_user("run", "-c", str(d.config))
    finally:
        d.incoming.chmod(0o755)
    assert r.returncode == 2
    assert f"incoming folder {d.incoming} is not readable" in r.stderr
    assert "Traceback" not in r.stderr
    shutil.rmtree(d.incoming)
    d.incoming.write_text("a file where the folder should be")
    r = thumbd("once", "-c", str(d.config))
    assert r.returncode == 2 and "does not exist (or is not a folder)" in r.stderr


# ---------------------------------------------------------------------------------------------
# 9. Deletions


def test_deletions_keep_or_remove_thumbnails_and_records_of_vanished_files_go(
    daemon: Daemon,
) -> None:
    drop(daemon.incoming / "d", ["k1.jpg", "k2.jpg"], jpeg_bytes((300, 200)))
    drop(daemon.incoming / "r", ["r1.jpg", "r2.jpg"], jpeg_bytes((300, 200)))
    drop(daemon.incoming, ["stay.jpg"], jpeg_bytes((300, 200)))
    daemon.start()
    rels = ["d/k1.jpg", "d/k2.jpg", "r/r1.jpg", "r/r2.jpg", "stay.jpg"]
    wait_until(lambda: all(daemon.done(r) for r in rels), 30, "the first pass")
    (daemon.incoming / "d" / "k1.jpg").unlink()  # on_delete = keep (the default)
    wait_until(lambda: "removed d/k1.jpg" in daemon.read_log(), 30, "the deletion")
    assert daemon.done("d/k1.jpg")
    assert daemon.stop() == 0
    (daemon.incoming / "d" / "k2.jpg").unlink()  # while stopped
    daemon.start()
    wait_until(lambda: "1 recorded source no longer exists" in daemon.read_log(), 30, "prune")
    assert daemon.done("d/k2.jpg")
    assert daemon.stop() == 0
    daemon.write_config({"thumbnails": {"on_delete": "remove"}})
    daemon.start()
    (daemon.incoming / "r" / "r1.jpg").unlink()
    wait_until(lambda: not any(t.exists() for t in daemon.thumbs("r/r1.jpg")), 30, "removal")
    assert daemon.done("r/r2.jpg")
    assert daemon.stop() == 0
    (daemon.incoming / "r" / "r2.jpg").unlink()
    daemon.start()
    wait_until(lambda: not (daemon.outgoing / "r").exists(), 30, "removal of the empty folder")
    assert daemon.done("d/k1.jpg") and daemon.done("d/k2.jpg")
    status = daemon.status()
    assert status == {**status, "done": 1, "failed": 0, "pending": 0}


def test_sources_deleted_before_they_are_processed_are_skipped_quietly(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THUMBD_TEST_HANG_MARKER", HANG)
    daemon.write_config({"resize": {"workers": 1, "timeout": 3.0}})
    daemon.start()
    drop(daemon.incoming, ["stuck.jpg"], jpeg_bytes((300, 200), comment=HANG.encode()))
    names = [f"q{i:02d}.jpg" for i in range(30)]
    drop(daemon.incoming, names, jpeg_bytes((1600, 1200)))
    wait_until(lambda: holds_open(daemon, "stuck.jpg"), 30, "the stuck file in a worker")
    gone = names[10:]
    for n in gone:  # queued behind the stuck file, or in flight
        (daemon.incoming / n).unlink()
    (daemon.incoming / "stuck.jpg").unlink()  # in flight, hung
    wait_until(lambda: all(daemon.done(n) for n in names[:10]), 60, "the others")
    wait_until(lambda: "task over 3 s" in daemon.read_log(), 30, "the hung worker killed")
    daemon.looked()  # the deletions taken in, and whatever was still queued through
    log = daemon.read_log()
    assert "failed" not in log and "ERROR" not in log
    status = daemon.status()
    assert status == {**status, "done": 11, "failed": 0, "pending": 0, "failures": []}


# ---------------------------------------------------------------------------------------------
# 10. Failure records and `thumbd retry`


def test_retry_clears_a_failure_and_a_running_daemon_tries_again(daemon: Daemon) -> None:
    daemon.write_config({"resize": {"max_file_bytes": 20_000}})
    drop(daemon.incoming / "f", ["big.jpg"], jpeg_bytes((1200, 900), seed=2))
    drop(daemon.incoming / "f", ["bad.jpg"], b"not an image at all")
    daemon.start()
    wait_until(lambda: daemon.read_log().count("failed f/") == 2, 30, "two failures")
    assert daemon.stop() == 0
    daemon.write_config({"resize": {"max_file_bytes": 100_000_000}})  # the cause is fixed
    daemon.start()
    wait_until(lambda: daemon.read_log().count("scan of") == 2, 30, "the start-up scan")
    daemon.looked()
    assert daemon.read_log().count("failed f/big.jpg") == 1  # unchanged: not retried
    r = thumbd("retry", "-v", "-c", str(daemon.config), str(daemon.incoming / "f" / "big.jpg"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["retry f/big.jpg", "retry: 1 failed file will be tried again"]
    wait_until(lambda: daemon.done("f/big.jpg"), 30, "the retried file, without a restart")
    r = thumbd("retry", "-c", str(daemon.config), "-v", "f")  # a folder, as status shows it
    assert r.returncode == 0 and "retry f/bad.jpg" in r.stdout
    wait_until(lambda: daemon.read_log().count("failed f/bad.jpg") == 2, 30, "a second try")
    r = thumbd("retry", "-c", str(daemon.config), "nothing.jpg")
    assert r.returncode == 1 and "no failure recorded for nothing.jpg" in r.stderr
    assert daemon.stop() == 0
    r = thumbd("retry", "-c", str(daemon.config), "--all")
    assert r.returncode == 0 and r.stdout == "retry: 1 failed file will be tried again\n"
    r = thumbd("once", "-c", str(daemon.config))
    assert r.returncode == 1 and "failed f/bad.jpg" in r.stderr
    assert thumbd("retry", "-c", str(daemon.config)).returncode == 2


def test_retry_and_redo_without_write_access_to_the_state_say_so(daemon: Daemon) -> None:
    """`thumbd retry` run as someone who may not write the daemon's state (a login user next
    to a service running as thumbd) is told so, without a traceback."""
    drop(daemon.incoming, ["bad.jpg"], b"not an image at all")
    daemon.start()
    daemon.recorded(failed=1)  # committed, not only logged: retry has it to change
    db = daemon.tmp / ".thumbd" / "thumbd.db"
    files = [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
    for p in files:
        p.chmod(0o444)
    try:
        for verb in ("retry", "redo"):
            r = as_ordinary_user(verb, "-c", str(daemon.config), "--all")
            assert r.returncode == 2, r.stdout + r.stderr
            assert f"thumbd: {db}: cannot change" in r.stderr, r.stderr
            assert "readonly database" in r.stderr and "Traceback" not in r.stderr, r.stderr
    finally:
        for p in files:
            p.chmod(0o644)
    assert daemon.status()["failed"] == 1
    assert daemon.stop() == 0
    # Stopped, its database has no -wal or -shm file, and this user cannot make one there:
    # `thumbd status` (a monitoring check, say) still reads it.
    daemon.config.parent.joinpath(".thumbd").chmod(0o555)
    try:
        r = as_ordinary_user("status", "-c", str(daemon.config), "--json")
    finally:
        daemon.config.parent.joinpath(".thumbd").chmod(0o755)
    assert r.returncode == 0, r.stderr
    assert '"failed": 1,' in r.stdout, r.stdout


def test_redo_renders_done_files_again_with_new_settings_and_removes_what_they_no_longer_make(
    daemon: Daemon,
) -> None:
    daemon.write_config({"thumbnails": {"widths": [200, 64]}})
    rels = ["a.jpg", "b/c.jpg", "b/d.jpg"]
    for rel in rels:
        drop(
            daemon.incoming / os.path.dirname(rel), [os.path.basename(rel)], jpeg_bytes((320, 240))
        )
    daemon.start()
    wait_until(lambda: all(daemon.done(r, (200, 64)) for r in rels), 30, "the first widths")
    daemon.write_config({"thumbnails": {"widths": [120]}})
    daemon.send(signal.SIGHUP)
    wait_until(lambda: "[thumbnails] widths" in daemon.read_log(), 30, "the reload")
    daemon.looked()
    assert not any(daemon.done(r, (120,)) for r in rels)  # new settings apply to new work only

    r = thumbd("redo", "-c", str(daemon.config), "--verbose", str(daemon.incoming / "b"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "redo b/c.jpg",
        "redo b/d.jpg",
        "redo: 2 files will be rendered again",
    ]
    wait_until(lambda: daemon.done("b/c.jpg", (120,)) and daemon.done("b/d.jpg", (120,)), 30, "b/")
    wait_until(lambda: not daemon.thumbs("b/d.jpg", (200,))[0].exists(), 30, "the old removed")
    assert sorted(p.name for p in all_files(daemon.outgoing / "b")) == [
        "c_120.jpg",
        "d_120.jpg",
    ]
    assert daemon.done("a.jpg", (200, 64)) and not daemon.done("a.jpg", (120,))  # not asked
    r = thumbd("redo", "-c", str(daemon.config), "nothing.jpg")
    assert r.returncode == 1 and "no record for nothing.jpg" in r.stderr
    assert daemon.stop() == 0

    # Without a running daemon: the next `once` renders them.
    r = thumbd("redo", "-c", str(daemon.config), "--all")
    assert r.returncode == 0 and r.stdout == "redo: 4 files will be rendered again\n"  # + sentinel
    r = thumbd("once", "-c", str(daemon.config))
    assert r.returncode == 0, r.stderr
    assert sorted(str(p.relative_to(daemon.outgoing)) for p in made(daemon.outgoing)) == [
        "a_120.jpg",
        "b/c_120.jpg",
        "b/d_120.jpg",
    ]
    assert daemon.status()["done"] == 4
    assert thumbd("redo", "-c", str(daemon.config)).returncode == 2


def test_retry_of_a_manifest_fetches_only_its_failed_urls_again(daemon: Daemon) -> None:
    img = jpeg_bytes((320, 240))
    with serving("127.0.0.1") as server:
        server.routes["/ok.jpg"] = Body(img)
        server.routes["/later.jpg"] = Steps([http_status(404), Body(img)])  # fixed after one try
        daemon.write_config({"download": {"allow_private_addresses": True}})
        daemon.start()
        manifest = daemon.incoming / "shop.urls"
        staged = daemon.tmp / "shop.urls"
        staged.write_text(f"{server.url('/ok.jpg')}\n{server.url('/later.jpg')}\n")
        os.replace(staged, manifest)
        wait_until(lambda: daemon.done("shop/ok.jpg"), 30, "the good URL")
        wait_until(lambda: "1 URLs done, 1 failed" in daemon.read_log(), 30, "the failed URL")
        assert [f.get("url") for f in daemon.status()["failures"]] == [server.url("/later.jpg")]
        r = thumbd("retry", "-c", str(daemon.config), "shop.urls")
        assert r.returncode == 0 and "retry: 1 failed file will" in r.stdout, r.stderr
        wait_until(lambda: daemon.done("shop/later.jpg"), 30, "the URL fetched again")
        assert server.counts["/ok.jpg"] == 1 and server.counts["/later.jpg"] == 2
        status = daemon.recorded(failed=0)
        assert status["failures"] == []


# ---------------------------------------------------------------------------------------------
# 11. The inotify watch limit


def test_the_watch_limit_is_explained_and_polling_takes_over(daemon: Daemon) -> None:
    if shutil.which("unshare") is None:
        pytest.skip(reason="unshare (util-linux) is not installed")
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(reason=f"user namespaces are not available here: {probe.stderr.strip()}")
    for i in range(20):
        (daemon.incoming / f"dir{i:02d}").mkdir()
    # A user namespace with a watch limit of its own: the rest of the machine is untouched.
    daemon.prefix = [
        "unshare",
        "--user",
        "--map-root-user",
        "sh",
        "-c",
        'echo 8 > /proc/sys/user/max_inotify_watches && exec "$@"',
        "sh",
    ]
    daemon.start()
    log = daemon.read_log()
    assert "inotify watch limit reached" in log
    assert "has 21 folders but fs.inotify.max_user_watches is 8" in log
    assert "sysctl fs.inotify.max_user_watches=65536" in log
    assert "Falling back to polling" in log
    drop(daemon.incoming / "dir19", ["deep.jpg"], jpeg_bytes((300, 200)))
    wait_until(lambda: daemon.done("dir19/deep.jpg"), 30, "a file in an unwatched folder")


def test_a_full_state_disk_stops_the_daemon_with_a_clear_error_and_loses_nothing(
    daemon: Daemon,
) -> None:
    state = daemon.tmp / ".thumbd"
    names = [f"s{i}.jpg" for i in range(6)]
    with tmpfs(state, "4m"):
        daemon.start()
        drop(daemon.incoming, ["first.jpg"], jpeg_bytes((320, 240)))
        wait_until(lambda: daemon.status()["done"] == 1, 30, "a first record")
        filler = fill(state)
        for i, name in enumerate(names):
            drop(daemon.incoming, [name], jpeg_bytes((320, 240), seed=i + 1))
        drop(daemon.incoming, ["copy.jpg"], jpeg_bytes((320, 240)))  # first.jpg's bytes
        assert daemon.proc is not None
        code = daemon.proc.wait(timeout=60)
        log = daemon.read_log()
        assert code == 1, log
        assert "Traceback" not in log
        assert f"cannot record in {state / 'thumbd.db'}: database or disk is full" in log, log
        filler.unlink()
        daemon.start()
        wait_until(lambda: daemon.status()["done"] == 8, 60, "every file after a restart")
        assert all(daemon.done(n) for n in [*names, "first.jpg", "copy.jpg"])
        log = daemon.read_log()
        assert all(log.count(f"done {n}:") == 1 for n in names), "rendered twice"
        assert "done copy.jpg:" not in log  # a copy of first.jpg: its thumbnails, linked
        assert daemon.stop() == 0
