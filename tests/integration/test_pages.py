"""The status page and the galleries of the real daemon, looked at in a real browser.

`thumbd run` as a subprocess on temporary folders; headless Chromium (tests/browser.py) loads
the status page over HTTP and the galleries from disk (file://), runs their scripts, and hands
back the DOM and its console. Screenshots are kept under the test's tmp_path (their paths are
printed); with THUMBD_SCREENSHOTS=DIR they are also copied there (`docs/` for the README).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from PIL import Image

from tests import browser, images
from tests.browser import needs_chromium, parse
from tests.conftest import Daemon, thumbd, wait_until
from thumbd.output.gallery_html import GALLERY, MARK
from thumbd.render import thumbhash

HOSTILE = "<img src=x onerror=alert(1)>.jpg"
PAGES = {"metrics": {"listen": "127.0.0.1:0"}}
GALLERIES = {"thumbnails": {"gallery": True, "index": True, "on_delete": "remove"}}


def picture(size: tuple[int, int], seed: int) -> bytes:
    """A photo-like JPEG, its hues turned by `seed` (so that a page of them is not all alike)."""
    hsv = images.natural(size, seed).convert("HSV")
    h, s, v = hsv.split()
    h = h.point(lambda x: (x + seed * 47) % 256)
    buf = io.BytesIO()
    Image.merge("HSV", (h, s, v)).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def drop(daemon: Daemon, rel: str, data: bytes) -> None:
    """Write under a dot name (ignored), then rename into place: one complete file."""
    final = daemon.incoming / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(".drop.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, final)


def page_url(daemon: Daemon) -> str:
    found = wait_until(
        lambda: re.search(r"status page on http://127\.0\.0\.1:(\d+)/", daemon.read_log()),
        30,
        "the status page's address in the log",
    )
    return f"http://127.0.0.1:{found[1]}/"


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers["Content-Type"], r.read()


def keep(shot: Path, name: str) -> None:
    """Copy a screenshot where THUMBD_SCREENSHOTS says (for the README), if it says."""
    where = os.environ.get("THUMBD_SCREENSHOTS")
    if where:
        shutil.copyfile(shot, Path(where) / name)


def not_blank(png: Path) -> bool:
    with Image.open(png) as im:
        lo, hi = im.convert("L").getextrema()
    return isinstance(lo, int) and isinstance(hi, int) and hi - lo > 64


# -- 1. the status page ----------------------------------------------------------------------


@needs_chromium
def test_status_page_of_the_running_daemon(daemon: Daemon, tmp_path: Path) -> None:
    daemon.write_config(PAGES)
    daemon.start()
    for i in range(4):
        drop(daemon, f"photo{i}.jpg", picture((800, 600), i))
    drop(daemon, HOSTILE, b"not an image at all" * 100)
    drop(daemon, "notes.txt", b"a file of a type thumbd does not take")
    daemon.recorded(done=4, failed=1)
    url = page_url(daemon)

    def live() -> dict[str, Any] | None:  # the monitor writes every couple of seconds
        code, kind, body = fetch(url + "status.json")
        assert code == 200 and kind == "application/json"
        status: dict[str, Any] = json.loads(body)
        counted = sum(n for _, n in status["history"])
        return status if status["daemon"].get("done") == 4 and counted == 5 else None

    status = wait_until(live, 30, "this run's files in the live figures and their history")
    assert status["daemon"]["running"] and status["daemon"]["workers"] == 2
    assert status["executor"] == {"kind": "local"} and status["backlog"] == 0
    assert status["ignored_by_extension"] == {".txt": 1}
    [failure] = status["recent_failures"]
    assert failure["source"] == HOSTILE and failure["reason"].startswith("cannot identify")
    _, kind, metrics_text = fetch(url + "metrics")  # still Prometheus text
    assert kind.startswith("text/plain") and b"thumbd_files_done_total 4.0" in metrics_text

    page = browser.load(url)
    assert page.errors == [], page.errors
    doc = parse(page.dom)
    tags = [t for t, _ in doc.elements]
    assert "img" not in tags  # the hostile name injected nothing
    assert not [a for _, a in doc.elements if any(k.startswith("on") for k in a)]
    text = page.text()
    assert HOSTILE in text and "cannot identify image file" in text
    assert "<title>thumbd: running, 0 to do</title>" in page.dom
    by_id = {a["id"]: a for _, a in doc.elements if "id" in a}
    assert {"backlog", "queue", "eta", "rate", "workers", "executor", "ignored", "chart"} <= set(
        by_id
    )
    assert re.search(r"workers 2 0 restarts", text, re.I)
    assert re.search(r"ignored 1 files of types", text, re.I)
    bars = [a for t, a in doc.elements if t == "rect"]
    assert len(bars) == 60 and max(float(b["height"]) for b in bars) > 0

    shot = browser.screenshot(url, tmp_path / "status-page.png", size=(1200, 980))
    assert not_blank(shot)
    keep(shot, "status-page.png")


# -- 2 and 3. galleries ----------------------------------------------------------------------


def figures_in(page: Path) -> int:
    return page.read_text().count("<figure") if page.exists() else -1


@needs_chromium
def test_galleries_follow_the_files_and_show_in_a_browser(daemon: Daemon, tmp_path: Path) -> None:
    daemon.write_config(GALLERIES)
    daemon.start()
    sources = {
        "harbour.jpg": (900, 600),
        "tower.jpg": (480, 720),
        HOSTILE: (640, 480),
        "small.jpg": (40, 30),
        "trips/2024/beach.jpg": (800, 533),
        "trips/2024/dunes.jpg": (800, 600),
        "trips/snow.jpg": (600, 800),
    }
    for i, (rel, size) in enumerate(sources.items()):
        drop(daemon, rel, picture(size, i))
    root, trips, year = (daemon.outgoing / d / GALLERY for d in ("", "trips", "trips/2024"))
    wait_until(lambda: figures_in(root) == 4 and figures_in(year) == 2, 60, "the pages")
    wait_until(lambda: "2024/index.html" in trips.read_text(), 30, "the link to trips/2024")
    assert MARK in root.read_text()

    page = browser.load(root.as_uri())
    assert page.errors == [], page.errors
    imgs, figs = page.elements("img"), page.elements("figure")
    assert len(imgs) == 4 and len(figs) == 4  # nothing injected by the hostile name
    assert not [a for _, a in parse(page.dom).elements if any(k.startswith("on") for k in a)]
    for img in imgs:  # every picture named is on disk, and the browser drew it
        assert (daemon.outgoing / unquote(img["src"])).is_file(), img["src"]
        for candidate in img.get("srcset", "").split(", "):
            if candidate:
                assert (daemon.outgoing / unquote(candidate.split()[0])).is_file(), candidate
    assert all("data-loaded" in f and "data-broken" not in f for f in figs), figs
    assert HOSTILE in page.text()
    links = [a["href"] for a in page.elements("a")]
    assert "trips/index.html" in links
    check_placeholders(page)
    shot = browser.screenshot(root.as_uri(), tmp_path / "gallery.png", size=(1100, 760))
    assert not_blank(shot)
    keep(shot, "gallery.png")

    year_page = browser.load(year.as_uri())
    assert year_page.errors == [] and len(year_page.elements("img")) == 2
    assert {"../index.html", "../../index.html"} <= {a["href"] for a in year_page.elements("a")}

    # Sources go: their thumbnails are removed, the pages follow; an empty folder loses its
    # page (and the folder), and its parent's link to it.
    (daemon.incoming / HOSTILE).unlink()
    for rel in ("trips/2024/beach.jpg", "trips/2024/dunes.jpg"):
        (daemon.incoming / rel).unlink()
    wait_until(lambda: figures_in(root) == 3, 60, "the root page without the hostile file")
    wait_until(lambda: not (daemon.outgoing / "trips" / "2024").exists(), 60, "trips/2024 gone")
    wait_until(lambda: "2024/" not in trips.read_text(), 30, "trips without its link to 2024")
    assert daemon.stop() == 0


def check_placeholders(page: browser.Page) -> None:
    """The script drew each ThumbHash as the decoder in thumbd/render/thumbhash.py does."""
    figs = [f for f in page.elements("figure") if "data-thumbhash" in f]
    styles = [i.get("style", "") for i in page.elements("img")]
    assert len(figs) == 4
    for fig, style in zip(figs, styles, strict=True):
        found = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", style)
        assert found, style
        with Image.open(io.BytesIO(base64.b64decode(found[1]))) as im:
            drawn = im.convert("RGBA")
        w, h, rgba = thumbhash.decode(base64.b64decode(fig["data-thumbhash"]))
        assert drawn.size == (w, h)
        worst = max(abs(a - b) for a, b in zip(drawn.tobytes(), rgba, strict=True))
        assert worst <= 2, f"the browser's placeholder is {worst} levels off"


def test_galleries_are_rebuilt_from_disk_after_a_crash(daemon: Daemon) -> None:
    daemon.write_config(GALLERIES)
    daemon.start()
    for i in range(3):
        drop(daemon, f"album/p{i}.jpg", picture((320, 240), i))
    album = daemon.outgoing / "album" / GALLERY
    wait_until(lambda: figures_in(album) == 3, 60, "the album's page")
    daemon.stop(signal.SIGKILL)  # no flush at shutdown
    album.write_text(f"<!DOCTYPE html>{MARK}<p>left by a run that went down</p>")
    (daemon.outgoing / GALLERY).unlink()
    (daemon.outgoing / "album" / "p0_200.jpg").unlink()  # and a thumbnail lost with it
    daemon.delete_state()  # the state rebuilt from the folders: the pages are not sources
    daemon.start()
    wait_until(lambda: figures_in(album) == 3, 60, "the album's page built again")
    wait_until(lambda: "album/index.html" in (daemon.outgoing / GALLERY).read_text(), 30, "root")
    status = daemon.recorded(done=3, failed=0, pending=0)
    assert status["ignored"] == 0
    assert "index.html" not in daemon.read_log()  # never taken for a source, nor warned about
    assert daemon.stop() == 0


def test_once_leaves_complete_galleries(tmp_path: Path) -> None:
    d = Daemon(tmp_path, GALLERIES)
    for i in range(2):
        drop(d, f"a/b/p{i}.jpg", picture((320, 240), i))
    r = thumbd("once", "-c", str(d.config))
    assert r.returncode == 0, r.stderr
    assert figures_in(d.outgoing / "a" / "b" / GALLERY) == 2
    assert "b/index.html" in (d.outgoing / "a" / GALLERY).read_text()
    assert "a/index.html" in (d.outgoing / GALLERY).read_text()
