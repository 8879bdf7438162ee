"""The real daemon with confined workers: every kind of source still renders, decoders' own
output arrives as log records, and a kernel without Landlock is said, once."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest

from tests import images, media, tiffs
from tests.conftest import Daemon, thumbd, wait_until
from tests.render.test_raw import make_dng, preview_jpeg
from thumbd.executors import sandbox

needs_landlock = pytest.mark.skipif(sandbox.abi() < 4, reason="needs Landlock ABI 4")


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
    for name in ("photo.jpg", "phone.heic", "clip.mp4", "cam.dng"):
        wait_until(functools.partial(daemon.done, name), 60, f"{name}'s thumbnails")
    status = daemon.recorded(done=4, failed=0)
    assert status["daemon"]["sandbox"].startswith("on (Landlock ABI"), status["daemon"]
    assert "sandbox" not in daemon.read_log()


def test_a_kernel_without_landlock_is_one_warning_and_shown_by_status(daemon: Daemon) -> None:
    daemon.start(env={"THUMBD_TEST_NO_LANDLOCK": "1"})
    images.make_jpeg(daemon.incoming / "a.jpg")
    wait_until(lambda: daemon.done("a.jpg"), 60, "the thumbnails")
    status = wait_until(lambda: "sandbox" in (s := daemon.status())["daemon"] and s, 30)
    assert status["daemon"]["sandbox"] == "off (the kernel has no Landlock)"
    assert daemon.read_log().count("worker sandbox off") == 1
    text = thumbd("status", "-c", str(daemon.config))
    assert "sandbox:   off (the kernel has no Landlock)" in text.stdout, text.stdout


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
    daemon.stop()
    records = [json.loads(line) for line in daemon.read_log().splitlines()]  # every line
    said = {r["source"]: r["message"] for r in records if r.get("logger") == "thumbd.worker"}
    assert "WEBP compression support is not configured" in said["webp.tif"], said
    assert "Corrupt EXIF data" in said["exif.tif"], said
