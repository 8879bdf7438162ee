"""Acceptance through the real daemon: every format, a cover size, animation and the index."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageSequence

from tests import images
from tests.conftest import Daemon, wait_until
from thumbd.render import thumbhash
from thumbd.render.pipeline import ALLOWED_FORMATS

CONFIG = """
[thumbnails]
widths = [200, 64]
animated = true
index = true

[[thumbnails.size]]
name = "square"
width = 100
height = 100
mode = "cover"

[resize]
workers = 2

[watch]
settle_seconds = 0.1
quiet_seconds = 1.0

[daemon]
shutdown_timeout = 20
"""


def make_sources(folder: Path) -> dict[str, tuple[str, int]]:
    """rel -> (thumbnail extension, frames)."""
    picture = images.natural((640, 480))
    sources: dict[str, tuple[str, int]] = {}

    def add(rel: str, fmt: str, ext: str = "jpg", frames: int = 1) -> Path:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "HEIF":
            images.make_heif(path, picture)
        elif fmt:
            picture.save(path, fmt)
        sources[rel] = (ext, frames)
        return path

    if "HEIF" in ALLOWED_FORMATS:
        add("phone/IMG_0001.HEIC", "HEIF")
    if "AVIF" in ALLOWED_FORMATS:
        add("web/picture.avif", "AVIF")
    add("web/photo.webp", "WEBP")
    add("scan/page.tiff", "TIFF")
    add("old/paint.bmp", "BMP")
    add("cam/DSC_0001.JPG", "JPEG")
    images.make_animated_gif(
        add("fun/loop.gif", "", "gif", 3),
        [(255, 0, 0), (0, 255, 0), (0, 0, 255)],
        [80, 160, 240],
        (640, 480),
    )
    return sources


def test_formats_sizes_animation_and_index_through_the_daemon(tmp_path: Path) -> None:
    if "HEIF" not in ALLOWED_FORMATS:
        pytest.fail("pillow-heif is a declared dependency: HEIC must be readable")
    daemon = Daemon(tmp_path)
    daemon.config.write_text(CONFIG)
    sources = make_sources(tmp_path / "src")
    daemon.start()
    try:
        shutil.copytree(tmp_path / "src", daemon.incoming, dirs_exist_ok=True)
        indexes = {rel: daemon.outgoing / Path(rel).with_suffix(".json") for rel in sources}
        wait_until(lambda: all(p.exists() for p in indexes.values()), 90, "every index")
        daemon.recorded(done=len(sources), failed=0)
    finally:
        daemon.stop()

    for rel, (ext, frames) in sources.items():
        index = json.loads(indexes[rel].read_text())
        assert index["source"] == {"file": Path(rel).name, "width": 640, "height": 480}, rel
        stem = Path(rel).stem
        assert [e["file"] for e in index["thumbnails"]] == [
            f"{stem}_200.{ext}",
            f"{stem}_64.{ext}",
            f"{stem}_square.{ext}",
        ], rel
        for entry, size in zip(
            index["thumbnails"], [(200, 150), (64, 48), (100, 100)], strict=True
        ):
            thumb = daemon.outgoing / Path(rel).parent / entry["file"]
            assert thumb.stat().st_size == entry["bytes"], thumb
            with Image.open(thumb) as im:
                assert im.size == size == (entry["width"], entry["height"]), thumb
                assert not im.getexif(), f"{thumb} carries EXIF"
                assert sum(1 for _ in ImageSequence.Iterator(im)) == frames, thumb
        w, h, _ = thumbhash.decode(base64.b64decode(index["thumbhash"]))
        assert abs(w / h - 4 / 3) < 0.2, rel
