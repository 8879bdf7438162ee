"""Acceptance: a mixed batch of real images copied into nested folders while the daemon runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests import images
from tests.conftest import Daemon, thumbd, wait_until

WIDTHS = (200, 64, 32)


def expected_size(upright: tuple[int, int], width: int) -> tuple[int, int]:
    w, h = upright
    if w <= width:
        return w, h
    return width, max(1, round(h * width / w))


def make_batch(src: Path) -> dict[str, tuple[tuple[int, int], str, bool]]:
    """20 sources: rel -> (upright size, expected extension, is an orientation probe)."""
    batch: dict[str, tuple[tuple[int, int], str, bool]] = {}
    probe = images.PROBE_SIZE
    for o in range(1, 9):
        rel = f"phone/2024/o{o}.jpg"
        images.make_orientation_probe(_mk(src, rel), o)
        batch[rel] = (probe, "jpg", True)
    for rel, size in (
        ("cam/big.jpg", (1600, 1200)),
        ("cam/tall.jpeg", (300, 900)),
        ("cam/narrow.jpg", (150, 100)),
        ("cam/wide.JPG", (2000, 500)),
    ):
        images.make_jpeg(_mk(src, rel), size)
        batch[rel] = (size, "jpg", False)
    images.make_cmyk_jpeg(_mk(src, "print/cmyk.jpg"), (400, 300))
    batch["print/cmyk.jpg"] = ((400, 300), "jpg", False)
    images.make_png_alpha(_mk(src, "web/alpha.png"), (400, 300))
    batch["web/alpha.png"] = ((400, 300), "png", False)
    images.make_png_alpha(_mk(src, "web/opaque-rgba.png"), (400, 300), opaque=True)
    batch["web/opaque-rgba.png"] = ((400, 300), "jpg", False)
    images.make_palette_gif(_mk(src, "web/palette.gif"), (300, 200))
    batch["web/palette.gif"] = ((300, 200), "png", False)
    images.make_palette_gif(_mk(src, "web/flat.gif"), (300, 200), transparent=False)
    batch["web/flat.gif"] = ((300, 200), "jpg", False)
    images.make_png16(_mk(src, "scan/deep.png"), (512, 64))
    batch["scan/deep.png"] = ((512, 64), "jpg", False)
    images.make_image(_mk(src, "scan/gray.png"), "L", "PNG", (400, 300))
    batch["scan/gray.png"] = ((400, 300), "jpg", False)
    images.make_image(_mk(src, "scan/bw.png"), "1", "PNG", (400, 300))
    batch["scan/bw.png"] = ((400, 300), "jpg", False)
    assert len(batch) == 20
    return batch


def _mk(src: Path, rel: str) -> Path:
    p = src / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def test_twenty_mixed_images_get_every_width_upright_in_the_right_format(daemon: Daemon) -> None:
    batch = make_batch(daemon.tmp / "src")
    daemon.start()
    shutil.copytree(daemon.tmp / "src", daemon.incoming, dirs_exist_ok=True)
    wait_until(
        lambda: all(daemon.done(rel, WIDTHS, ext) for rel, (_, ext, _) in batch.items()),
        60,
        "every thumbnail of 20 images",
    )
    for rel, (upright, ext, probe) in batch.items():
        for width, thumb in zip(WIDTHS, daemon.thumbs(rel, WIDTHS, ext), strict=True):
            with Image.open(thumb) as im:
                assert im.format == ("JPEG" if ext == "jpg" else "PNG"), thumb
                assert im.size == expected_size(upright, width), thumb
                assert not im.getexif(), f"{thumb} carries EXIF"
                if probe and width >= 64:
                    assert images.is_upright(im), f"{thumb} is not upright"
                if ext == "png":
                    assert im.mode in ("RGBA", "LA"), thumb
    with Image.open(daemon.thumbs("scan/deep.png", WIDTHS)[0]) as im:
        lo, hi = im.convert("L").getextrema()
        assert lo < 30 and hi > 225, "16-bit gradient lost its range"
    daemon.recorded(done=20, failed=0, pending=0)


def test_ignored_files_of_other_types_are_counted_and_said_once(daemon: Daemon) -> None:
    """Not ignored in silence: `thumbd status` counts them by extension, the log says so once
    per extension, whether a scan or an event found them."""
    (daemon.incoming / "before.pdf").write_bytes(b"%PDF-1.4 not an image")
    daemon.start()
    images.make_jpeg(daemon.incoming / "photo.jpg", (300, 200))
    (daemon.incoming / "notes.txt").write_text("a")
    (daemon.incoming / "sub").mkdir()
    (daemon.incoming / "sub" / "more.TXT").write_text("b")
    (daemon.incoming / "README").write_text("c")
    (daemon.incoming / "skip.part").write_text("a temp name: left out on purpose")
    wait_until(lambda: daemon.done("photo.jpg"), what="photo.jpg's thumbnails")
    wait_until(lambda: "files without an extension" in daemon.read_log(), what="the log line")
    status = daemon.status()
    assert status["ignored"] == 4
    assert status["ignored_by_extension"] == {".txt": 2, ".pdf": 1, "": 1}
    log = daemon.read_log()
    assert log.count("ignoring .txt files") == 1
    assert log.count("ignoring .pdf files") == 1
    assert ".part" not in log
    text = thumbd("status", "-c", str(daemon.config))
    assert "ignored: 4 (.txt 2, (no extension) 1, .pdf 1)" in text.stdout


def test_camera_raw_files_get_upright_thumbnails_or_a_clear_reason(daemon: Daemon) -> None:
    from tests.render.test_raw import make_dng, preview_jpeg

    daemon.start()
    portrait = daemon.incoming / "cam" / "portrait.dng"  # a landscape preview, RAW says turn
    portrait.parent.mkdir()
    make_dng(portrait, preview=preview_jpeg((640, 480)), orientation=6)
    make_dng(daemon.incoming / "cam" / "sensor.dng", thumbnail=False)  # no preview: demosaic
    (daemon.incoming / "cam" / "empty.nef").write_bytes(b"II*\x00" + bytes(60))
    wait_until(lambda: daemon.done("cam/portrait.dng"), what="the RAW with a preview")
    wait_until(lambda: daemon.done("cam/sensor.dng"), what="the demosaiced RAW")
    with Image.open(daemon.outgoing / "cam" / "portrait_200.jpg") as im:
        assert im.width == 200 and im.height > im.width  # turned by the RAW's orientation
    status = daemon.recorded(done=2, failed=1)
    (failure,) = status["failures"]
    assert failure["source"] == "cam/empty.nef"
    assert "RAW" in failure["reason"] or "raw" in failure["reason"], failure


def test_nas_clutter_and_opted_out_folders_are_left_out(daemon: Daemon) -> None:
    """A share's own folders (Synology's @eaDir thumbnails, recycle bins) and any folder with a
    `.nomedia` or `.thumbdignore` in it (and all below it) get no thumbnails, whether a scan
    or an event finds their files; neither counts them as ignored."""
    for rel in ("@eaDir/a.jpg/SYNOPHOTO_THUMB_XL.jpg", "#recycle/old.jpg", "private/x.jpg"):
        images.make_jpeg(daemon.incoming / _mkdirs(daemon.incoming, rel), (300, 200))
    (daemon.incoming / "private" / ".nomedia").write_bytes(b"")
    (daemon.incoming / "album" / "deep").mkdir(parents=True)
    (daemon.incoming / "album" / ".thumbdignore").write_bytes(b"")
    daemon.start()  # the start-up scan sees the first ones
    images.make_jpeg(daemon.incoming / "album" / "deep" / "new.jpg", (300, 200))  # an event
    images.make_jpeg(daemon.incoming / "private" / "later.jpg", (300, 200))
    images.make_jpeg(daemon.incoming / "#recycle" / "binned.jpg", (300, 200))
    images.make_jpeg(daemon.incoming / "kept.jpg", (300, 200))  # a sentinel: looked at last
    wait_until(lambda: daemon.done("kept.jpg"), what="the sentinel's thumbnails")
    status = daemon.recorded(done=1)
    assert (status["pending"], status["ignored"]) == (0, 0), status
    assert sorted(p.name for p in daemon.outgoing.rglob("*.jpg")) == [
        "kept_200.jpg",
        "kept_32.jpg",
        "kept_64.jpg",
    ]


def _mkdirs(root: Path, rel: str) -> str:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    return rel


def test_heic_thumbnails_come_from_the_embedded_one_unless_it_shows_another_picture(
    daemon: Daemon,
) -> None:
    """Through the real daemon: an embedded thumbnail (green where the primary is blue) that
    covers every width is what the thumbnails are made from; one turned otherwise than the
    primary, one letterboxed, or a corrupt one, is not: the primary is decoded in full."""
    from tests.render import test_heif as h
    from tests.render.heic_files import heic

    if "HEIF" not in h.pillow.ALLOWED_FORMATS:
        pytest.skip(reason="pillow-heif is not installed")
    daemon.start()
    fast = heic(h.primary_probe(), h.thumbnail_probe())
    (daemon.incoming / "fast.heic").write_bytes(fast)
    turned = heic(
        h.stored(h.primary_probe(), 6),
        h.stored(h.thumbnail_probe(), 6),
        orientation=6,
        thumbnail_orientation=1,
    )
    (daemon.incoming / "turned.heic").write_bytes(turned)
    (daemon.incoming / "barred.heic").write_bytes(heic(h.primary_probe(), h.letterboxed(True)))
    for name in ("fast", "turned", "barred"):
        wait_until(lambda n=name: daemon.done(f"{n}.heic"), 60, f"{name}.heic")  # type: ignore[misc]

    def source_of(name: str) -> str:
        with Image.open(daemon.outgoing / f"{name}_200.jpg") as im:
            return h.came_from(im.convert("RGB"))

    assert source_of("fast") == "thumbnail"
    assert source_of("turned") == "primary"
    assert source_of("barred") == "primary"
