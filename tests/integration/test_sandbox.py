"""The real daemon's workers: confined (every kind of source still renders; a task that tries
to escape is refused each time, also after a reload moved incoming/), a kernel without
Landlock said once, and decoders' own output arriving as log records, never raw."""

from __future__ import annotations

import json
import shutil
import signal
import socket
from pathlib import Path

import pytest

from tests import images, media, tiffs
from tests.conftest import Daemon, thumbd, wait_until
from tests.integration.test_core import jpeg_bytes
from tests.render.test_raw import make_dng, preview_jpeg
from thumbd.executors import sandbox

needs_landlock = pytest.mark.skipif(
    sandbox.abi() < 4,
    reason="this kernel has no Landlock ABI 4 (its TCP rules confine the workers)",
)
ESCAPE = "THUMBD-TEST-ESCAPE"


@needs_landlock
@media.needs_ffmpeg
def test_jpeg_heic_video_and_raw_render_in_confined_workers(daemon: Daemon, tmp_path: Path) -> None:
    made = tmp_path / "made"
    made.mkdir()
    images.make_jpeg(made / "photo.jpg")
    images.make_heif(made / "phone.heic")
    media.clip(made / "clip.mp4")
    make_dng(made / "cam.dng", preview=preview_jpeg((640, 480)))
    daemon.start()
    for f in made.iterdir():
        shutil.copy(f, daemon.incoming / f.name)
    status = daemon.recorded(done=4, failed=0)
    assert status["daemon"]["sandbox"].startswith("on (Landlock ABI"), status["daemon"]
    assert "worker sandbox" not in daemon.read_log()


def escape_source(folder: Path, name: str, secret: Path, port: int) -> Path:
    """A JPEG whose bytes ask the test hook for a read of `secret`, a write beside it and a
    connection to `port`."""
    planted = folder.parent / f"planted-{name}.txt"
    path = folder / name
    asks = f" {ESCAPE} read={secret} write={planted} connect={port}\n"
    path.write_bytes(jpeg_bytes((64, 48)) + asks.encode())
    return path


def failures(daemon: Daemon) -> dict[str, str]:
    return {f["source"]: f["reason"] for f in daemon.status()["failures"]}


@needs_landlock
def test_a_task_that_tries_to_escape_is_refused_each_time(daemon: Daemon, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"  # beside incoming/, not in it
    secret.write_text("not a source")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        daemon.start(env={"THUMBD_TEST_ESCAPE_MARKER": ESCAPE})
        escape_source(daemon.incoming, "x.jpg", secret, port)
        wait_until(lambda: "x.jpg" in failures(daemon), 30, "the escape's outcome")
        reason = failures(daemon)["x.jpg"]
        assert reason == (
            f"escape tries: read {secret}: refused; write {tmp_path / 'planted-x.jpg.txt'}:"
            f" refused; connect {port}: refused"
        ), reason
        # A reload to a new incoming/: new workers, confined to it (the old one is outside).
        other = tmp_path / "elsewhere-in"
        other.mkdir()
        old = daemon.incoming / "old.txt"
        old.write_text("in the old incoming/")
        daemon.write_config({"paths": {"incoming": str(other)}})
        daemon.send(signal.SIGHUP)
        wait_until(lambda: "reloaded" in daemon.read_log(), 30, "the reload")
        images.make_jpeg(other / "fine.jpg")
        escape_source(other, "y.jpg", old, port)
        wait_until(lambda: "y.jpg" in failures(daemon), 30, "the escape after the reload")
        assert failures(daemon)["y.jpg"].startswith(f"escape tries: read {old}: refused; write ")
        assert failures(daemon)["y.jpg"].endswith(f": refused; connect {port}: refused")
        daemon.recorded(done=1)  # fine.jpg: the new workers read the new incoming/
        server.settimeout(0.0)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever reached it
    assert not list(tmp_path.glob("planted-*"))


def test_without_the_sandbox_the_same_tries_succeed(daemon: Daemon, tmp_path: Path) -> None:
    # The refusals are the sandbox's, not the test's: on a kernel taken to have no Landlock,
    # the same tries succeed; the daemon says so once, and status shows it.
    secret = tmp_path / "secret.txt"
    secret.write_text("not a source")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        env = {"THUMBD_TEST_ESCAPE_MARKER": ESCAPE, "THUMBD_TEST_NO_LANDLOCK": "1"}
        daemon.start(env=env)
        escape_source(daemon.incoming, "x.jpg", secret, port)
        wait_until(lambda: "x.jpg" in failures(daemon), 30, "the escape's outcome")
        assert failures(daemon)["x.jpg"] == (
            f"escape tries: read {secret}: done; write {tmp_path / 'planted-x.jpg.txt'}: done;"
            f" connect {port}: done"
        )
    live = wait_until(lambda: "sandbox" in (s := daemon.status())["daemon"] and s, 30)
    assert live["daemon"]["sandbox"] == "off (the kernel has no Landlock)"
    assert daemon.read_log().count("worker sandbox off") == 1
    text = thumbd("status", "-c", str(daemon.config)).stdout
    assert "sandbox:   off (the kernel has no Landlock)" in text, text


def test_json_logs_stay_json_with_hostile_tiffs(daemon: Daemon) -> None:
    daemon.write_config({"log": {"format": "json"}})
    daemon.start()
    tiffs.webp_tiff(daemon.incoming / "webp.tif")
    tiffs.bad_lzw_tiff(daemon.incoming / "lzw.tif")
    tiffs.short_exif_tiff(daemon.incoming / "exif.tif")
    status = daemon.recorded(failed=3)
    reasons = {f["source"]: f["reason"] for f in status["failures"]}
    assert "WEBP compression support is not configured" in reasons["webp.tif"], reasons
    assert "Using code not yet in table" in reasons["lzw.tif"], reasons
    assert daemon.stop() == 0
    lines = daemon.read_log().splitlines()
    records = [json.loads(line) for line in lines]  # every line on stderr is JSON
    said = {r["source"]: r["message"] for r in records if r.get("logger") == "thumbd.worker"}
    assert "WEBP compression support is not configured" in said["webp.tif"], said
    assert "Corrupt EXIF data" in said["exif.tif"], said
    assert all(r["level"] == "warning" for r in records if r.get("logger") == "thumbd.worker")
