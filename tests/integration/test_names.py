"""Sources of one folder with the same stem (`x.jpg` and `x.png`, an iPhone's `IMG_1.HEIC` and
`IMG_1.JPG`) keep thumbnails of their own: the real daemon on real folders, and every check
looks at the pixels, so a thumbnail that shows the other source's picture fails it."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sqlite3
from pathlib import Path

from PIL import Image, ImageStat

from tests import images
from tests.conftest import Daemon, all_files, made, wait_until

RED = (220, 20, 20)
BLUE = (20, 20, 220)
GREEN = (20, 180, 20)
YELLOW = (230, 220, 20)
COLOURS = {"red": RED, "blue": BLUE, "green": GREEN, "yellow": YELLOW}
WIDTHS = (200, 64, 32)


def drop(daemon: Daemon, rel: str, colour: tuple[int, int, int], fmt: str) -> Path:
    """A picture of one colour, made beside incoming/ and renamed in: it arrives complete. The
    same rename replaces an earlier version."""
    picture = Image.new("RGB", (300, 200), colour)
    staging = daemon.tmp / "staging" / Path(rel).name
    staging.parent.mkdir(exist_ok=True)
    if fmt == "HEIF":
        images.make_heif(staging, picture)
    else:
        buf = io.BytesIO()
        picture.save(buf, fmt)
        staging.write_bytes(buf.getvalue())
    target = daemon.incoming / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
    return target


def colour(path: Path) -> str:
    """The name of the test colour `path` shows (thumbnails are lossy: the nearest one)."""
    with Image.open(path) as im:
        mean = ImageStat.Stat(im.convert("RGB")).mean
    return min(COLOURS, key=lambda c: math.dist(COLOURS[c], mean))


def thumbs(daemon: Daemon, key: str) -> list[Path]:
    """The thumbnails named after `key` (`a/x` for the plain names, `a/x.png` for x.png's own)."""
    return [daemon.outgoing / f"{key}_{w}.jpg" for w in WIDTHS]


def shows(daemon: Daemon, key: str, name: str) -> bool:
    """Every thumbnail named after `key` exists and shows the colour `name`."""
    return all(p.exists() and colour(p) == name for p in thumbs(daemon, key))


def rows(daemon: Daemon) -> dict[str, list[str]]:
    """source -> the outputs its state row lists."""
    db = sqlite3.connect(f"file:{daemon.tmp / '.thumbd' / 'thumbd.db'}?mode=ro", uri=True)
    try:
        return {p: json.loads(o) for p, o in db.execute("SELECT path, outputs FROM sources")}
    finally:
        db.close()


def since_start(daemon: Daemon) -> str:
    return daemon.read_log().split("thumbd started")[-1]


def test_same_stem_sources_in_one_folder_each_keep_their_own_thumbnails(daemon: Daemon) -> None:
    daemon.write_config({"thumbnails": {"index": True}})
    daemon.start()
    drop(daemon, "a/x.jpg", RED, "JPEG")
    wait_until(lambda: shows(daemon, "a/x", "red"), 30, "x.jpg's thumbnails")
    drop(daemon, "a/x.png", BLUE, "PNG")
    wait_until(lambda: shows(daemon, "a/x.png", "blue"), 30, "x.png's own thumbnails")
    assert shows(daemon, "a/x", "red")  # not overwritten
    index = json.loads((daemon.outgoing / "a" / "x.png.json").read_bytes())
    assert index["source"]["file"] == "x.png"
    assert [t["file"] for t in index["thumbnails"]] == [f"x.png_{w}.jpg" for w in WIDTHS]
    index = json.loads((daemon.outgoing / "a" / "x.json").read_bytes())
    assert [t["file"] for t in index["thumbnails"]] == [f"x_{w}.jpg" for w in WIDTHS]
    assert (
        "a/x.png: a/x_200.jpg already belongs to a/x.jpg; writing a/x.png_200.jpg, "
        "a/x.png_64.jpg, a/x.png_32.jpg, a/x.png.json instead" in daemon.read_log()
    )

    # An iPhone export: the HEIC and its JPEG arrive together; whichever is written first
    # keeps the plain names, and the other gets its own.
    drop(daemon, "b/IMG_1.HEIC", GREEN, "HEIF")
    drop(daemon, "b/IMG_1.JPG", YELLOW, "JPEG")
    wait_until(lambda: daemon.status()["done"] == 4, 30, "both pictures of the export")
    recorded = rows(daemon)
    heic, jpg = recorded["b/IMG_1.HEIC"], recorded["b/IMG_1.JPG"]
    assert set(heic).isdisjoint(jpg)
    assert sorted(["b/IMG_1.json" in heic, "b/IMG_1.json" in jpg]) == [False, True]
    for names, expected in ((heic, "green"), (jpg, "yellow")):
        assert [colour(daemon.outgoing / n) for n in names if n.endswith(".jpg")] == [expected] * 3
    listed = {name for outputs in recorded.values() for name in outputs}
    assert {str(p.relative_to(daemon.outgoing)) for p in all_files(daemon.outgoing)} == listed


def test_names_do_not_flip_on_a_restart_a_change_or_when_the_sibling_is_gone(
    daemon: Daemon,
) -> None:
    daemon.start()
    drop(daemon, "a/x.jpg", RED, "JPEG")
    wait_until(lambda: shows(daemon, "a/x", "red"), 30, "x.jpg's thumbnails")
    drop(daemon, "a/x.png", BLUE, "PNG")
    wait_until(lambda: shows(daemon, "a/x.png", "blue"), 30, "x.png's own thumbnails")
    assert daemon.stop() == 0
    before = {p: p.stat().st_mtime_ns for p in all_files(daemon.outgoing)}
    daemon.start()
    wait_until(lambda: "scan of" in since_start(daemon), 30, "the start-up scan")
    daemon.looked()  # the scan's finds settled and anything wrongly taken rendered
    assert {p: p.stat().st_mtime_ns for p in made(daemon.outgoing)} == before

    drop(daemon, "a/x.jpg", GREEN, "JPEG")  # the first owner changes: it keeps the plain names
    wait_until(lambda: shows(daemon, "a/x", "green"), 30, "x.jpg's new thumbnails")
    drop(daemon, "a/x.png", YELLOW, "PNG")  # the second one keeps its own
    wait_until(lambda: shows(daemon, "a/x.png", "yellow"), 30, "x.png's new thumbnails")
    assert shows(daemon, "a/x", "green")
    assert not any(p.exists() for p in thumbs(daemon, "a/x.jpg"))

    (daemon.incoming / "a" / "x.jpg").unlink()  # on_delete = "keep": its thumbnails stay
    wait_until(lambda: "removed a/x.jpg" in daemon.read_log(), 30, "the deletion")
    drop(daemon, "a/x.png", RED, "PNG")  # the plain names are free now; x.png stays put
    wait_until(lambda: shows(daemon, "a/x.png", "red"), 30, "x.png's third version")
    assert shows(daemon, "a/x", "green")
    assert daemon.read_log().count("already belongs to") == 1  # said once, not on each render


def test_on_delete_remove_removes_only_what_no_other_source_lists(daemon: Daemon) -> None:
    daemon.write_config({"thumbnails": {"on_delete": "remove"}})
    daemon.start()
    drop(daemon, "a/x.jpg", RED, "JPEG")
    wait_until(lambda: shows(daemon, "a/x", "red"), 30, "a/x.jpg")
    drop(daemon, "a/x.png", BLUE, "PNG")
    drop(daemon, "b/x.jpg", RED, "JPEG")
    drop(daemon, "c/x.jpg", RED, "JPEG")
    for key, name in (("a/x.png", "blue"), ("b/x", "red"), ("c/x", "red")):
        wait_until(lambda k=key, n=name: shows(daemon, k, n), 30, key)
    assert daemon.stop() == 0
    # b/ and c/ as an earlier thumbd left them: a same-stem sibling whose row lists the very
    # names its sibling's row lists (whichever was written last had overwritten them).
    legacy = {f"{d}/x.png": drop(daemon, f"{d}/x.png", BLUE, "PNG") for d in "bc"}
    db = sqlite3.connect(daemon.tmp / ".thumbd" / "thumbd.db")
    with contextlib.closing(db), db:
        for rel, path in legacy.items():
            st = path.stat()
            outputs = json.dumps([f"{rel[0]}/x_{w}.jpg" for w in WIDTHS])
            db.execute(
                "INSERT INTO sources (path, size, mtime_ns, inode, status, outputs, updated)"
                " VALUES (?, ?, ?, ?, 'done', ?, 0)",
                (rel, st.st_size, st.st_mtime_ns, st.st_ino, outputs),
            )
    daemon.start()
    wait_until(lambda: "scan of" in since_start(daemon), 30, "the start-up scan")

    (daemon.incoming / "a" / "x.jpg").unlink()
    wait_until(lambda: not any(p.exists() for p in thumbs(daemon, "a/x")), 30, "a/x.jpg's")
    assert shows(daemon, "a/x.png", "blue")

    (daemon.incoming / "b" / "x.png").unlink()  # its row lists b/x.jpg's names: they stay
    wait_until(lambda: "removed b/x.png" in daemon.read_log(), 30, "b/x.png's deletion")
    assert shows(daemon, "b/x", "red")

    drop(daemon, "c/x.png", YELLOW, "PNG")  # re-rendered: its own names; c/x.jpg's stay
    wait_until(lambda: shows(daemon, "c/x.png", "yellow"), 30, "c/x.png's own names")
    assert shows(daemon, "c/x", "red")
    (daemon.incoming / "c" / "x.jpg").unlink()  # nobody else lists them now
    wait_until(lambda: not any(p.exists() for p in thumbs(daemon, "c/x")), 30, "c/x.jpg's")
    assert shows(daemon, "c/x.png", "yellow")


def test_a_lost_state_database_gives_no_source_its_sibling_s_thumbnails(daemon: Daemon) -> None:
    pictures = {"a/x.jpg": RED, "a/x.png": BLUE, "c/x.jpg": GREEN, "c/x.png": YELLOW}
    for rel, rgb in pictures.items():  # together, before the start: both names are a race
        drop(daemon, rel, rgb, "PNG" if rel.endswith("png") else "JPEG")
    drop(daemon, "b/solo.jpg", RED, "JPEG")
    daemon.start()
    wait_until(lambda: daemon.status()["done"] == 5, 30, "the first pass")
    assert daemon.stop() == 0
    first = rows(daemon)
    plain = {rel: f"{rel[0]}/x_200.jpg" in first[rel] for rel in pictures}
    assert sorted(plain.values()) == [False, False, True, True]
    # c/: the sibling without the plain names lost its own thumbnails too (say, a kill before
    # they were written): the plain set is there, newer than both sources, and is not its.
    (second,) = [rel for rel in ("c/x.jpg", "c/x.png") if not plain[rel]]
    for name in first[second]:
        (daemon.outgoing / name).unlink()
    daemon.delete_state()

    daemon.start()
    wait_until(lambda: daemon.status()["done"] == 5, 30, "the rebuilt state")
    log = since_start(daemon)
    assert "kept b/solo.jpg" in log
    rebuilt = rows(daemon)
    for rel in ("a/x.jpg", "a/x.png"):  # a/: each keeps its names; the plain set is rendered
        assert rebuilt[rel] == first[rel]
        assert (f"done {rel}" if plain[rel] else f"kept {rel}") in log
    for rel, rgb in pictures.items():
        expected = next(name for name, c in COLOURS.items() if c == rgb)
        assert [colour(daemon.outgoing / n) for n in rebuilt[rel]] == [expected] * 3, rel
    assert set(rebuilt["c/x.jpg"]).isdisjoint(rebuilt["c/x.png"])
