"""Galleries built from what is on disk: real thumbnails (the real render() and names), a real
Writer, the Gallery stage driven by its own clock (tick(now), next_due())."""

from __future__ import annotations

import json
import logging
import os
import queue
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests import images
from tests.browser import parse
from thumbd.config import Config, load_config
from thumbd.output import names
from thumbd.output.gallery import MIN_INTERVAL, Gallery, list_folder
from thumbd.output.gallery_html import GALLERY, MARK, url
from thumbd.output.writer import Writer
from thumbd.render.pipeline import render, spec_from_config
from thumbd.service.shared import Shared

HOSTILE = "<img src=x onerror=alert(1)>.jpg"


def configure(tmp: Path, thumbnails: str = "") -> Config:
    (tmp / "incoming").mkdir(exist_ok=True)
    cfg = tmp / "thumbd.toml"
    cfg.write_text(f"[thumbnails]\ngallery = true\nindex = true\n{thumbnails}")
    return load_config(cfg)


class Folders:
    """incoming/ and outgoing/ with sources rendered and written as the daemon writes them."""

    def __init__(self, tmp: Path, thumbnails: str = "") -> None:
        self.config = configure(tmp, thumbnails)
        self.spec = spec_from_config(self.config)
        self.incoming, self.outgoing = self.config.paths.incoming, self.config.paths.outgoing
        self.writer = Writer(self.outgoing)
        self.writer.prepare()
        self.shared = Shared(self.config, self.spec, queue.SimpleQueue(), once=False)
        self.gallery = Gallery(self.shared, lambda: self.writer)

    def add(self, rel: str, size: tuple[int, int] = (640, 480)) -> list[str]:
        source = self.incoming / rel
        source.parent.mkdir(parents=True, exist_ok=True)
        images.natural(size, seed=len(rel)).save(source, "PNG" if rel.endswith(".png") else "JPEG")
        result = render(str(source), self.spec)
        assert result.failure is None, result.failure
        chosen = names.choose(rel, names.labels(result), result.index is not None, (), {})
        self.writer.write_all(names.files(chosen, result))
        self.gallery.changed(rel)
        return list(chosen.all)

    def remove(self, rel: str, outputs: list[str]) -> None:
        (self.incoming / rel).unlink()
        for name in outputs:
            self.writer.remove(name, prune=True)
        self.gallery.changed(rel)

    def page(self, folder: str = "") -> Path:
        return self.outgoing / folder / GALLERY

    def built(self, folder: str = "") -> str:
        return self.page(folder).read_text()

    def settle(self) -> None:
        """Run the stage until it has nothing left to do right now (as the main loop would)."""
        for _ in range(100):
            due = self.gallery.next_due()
            if due is None or due > time.monotonic():
                return
            self.gallery.tick(time.monotonic())
        pytest.fail("the gallery never ran out of work")


def figures(html: str) -> list[dict[str, str]]:
    return [attrs for tag, attrs in parse(html).elements if tag == "figure"]


def imgs(html: str) -> list[dict[str, str]]:
    return [attrs for tag, attrs in parse(html).elements if tag == "img"]


def links(html: str) -> list[str]:
    return [attrs["href"] for tag, attrs in parse(html).elements if tag == "a"]


def test_a_folder_page_has_a_figure_per_source_with_srcset_and_placeholder(
    tmp_path: Path,
) -> None:
    f = Folders(tmp_path)
    f.add("a.jpg", (640, 480))
    f.add("narrow.jpg", (40, 30))  # narrower than 64 and 200: those two are 40 px wide
    f.add("tiny.jpg", (30, 20))  # narrower than every width: three files, one width
    f.gallery.flush()
    html = f.built()
    assert MARK in html
    assert len(figures(html)) == 3 and len(imgs(html)) == 3
    a, narrow, tiny = imgs(html)
    assert a["srcset"] == "a_32.jpg 32w, a_64.jpg 64w, a_200.jpg 200w"
    assert a["src"] == "a_200.jpg" and a["loading"] == "lazy"
    assert (a["width"], a["height"]) == ("200", "150")  # from the index: space kept while loading
    assert narrow["srcset"] == "narrow_32.jpg 32w, narrow_200.jpg 40w"  # each width once
    assert "srcset" not in tiny and (tiny["width"], tiny["height"]) == ("30", "20")
    index = json.loads((f.outgoing / "a.json").read_text())
    assert figures(html)[0]["data-thumbhash"] == index["thumbhash"]
    assert f"background-color: {index['dominant_colour']}" in a["style"]
    assert "a.jpg 640×480" in parse(html).text()
    for img in imgs(html):  # every picture the page names is there
        assert (f.outgoing / img["src"]).is_file()


def test_hostile_and_odd_names_are_text_and_links_that_work(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    f.add(HOSTILE)
    f.add('quote" & #hash?.jpg')
    f.gallery.flush()
    html = f.built()
    doc = parse(html)
    assert [t for t, _ in doc.elements].count("img") == 2  # nothing injected
    assert not [a for _, a in doc.elements if any(k.startswith("on") for k in a)]
    assert HOSTILE in doc.text() and 'quote" & #hash?.jpg' in doc.text()
    for img in imgs(html):
        assert img["src"].startswith(("%3Cimg", "quote%22"))
        assert (f.outgoing / unquote(img["src"])).is_file()


def test_a_name_that_is_not_utf8_links_its_bytes(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    raw = os.fsdecode(b"caf\xe9.jpg")  # Latin-1, as an old camera card may hold
    f.add(raw)
    f.gallery.flush()
    html = f.built()
    assert imgs(html)[0]["src"] == "caf%E9_200.jpg"
    assert "caf\ufffd" in parse(html).text()


def test_sub_folders_link_both_ways_and_parents_appear_for_them(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    f.add("top.jpg")
    f.add("a/b/deep.jpg")  # a/ has no thumbnail of its own: it gets a page to reach b/
    f.settle()
    assert "a/index.html" in links(f.built())
    assert "b/index.html" in links(f.built("a")) and "../index.html" in links(f.built("a"))
    deep = f.built("a/b")
    assert "../index.html" in links(deep) and "../../index.html" in links(deep)  # breadcrumbs
    assert len(imgs(f.built("a"))) == 0 and len(imgs(deep)) == 1


def test_a_page_follows_its_folder_and_goes_with_its_last_thumbnail(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    keep = f.add("keep.jpg")
    gone = f.add("a/b/only.jpg")
    f.settle()
    assert f.page("a/b").exists() and f.page("a").exists()
    f.remove("a/b/only.jpg", gone)
    f.gallery.flush()  # whatever the interval says
    assert not (f.outgoing / "a").exists()  # both pages gone, and the folders they held
    assert "a/index.html" not in links(f.built())
    f.remove("keep.jpg", keep)
    f.gallery.flush()
    assert not f.page().exists()
    assert sorted(p.name for p in f.outgoing.iterdir()) == [".thumbd-tmp"]


def test_a_busy_folder_is_rebuilt_at_most_every_few_seconds(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    f.add("one.jpg")
    start = time.monotonic()
    assert f.gallery.next_due() is not None
    f.gallery.tick(start)  # the sweep of the start, then the first page at once
    f.gallery.tick(start)
    assert len(figures(f.built())) == 1
    f.add("two.jpg")
    due = f.gallery.next_due()
    assert due is not None and due >= start + MIN_INTERVAL
    f.gallery.tick(due - 0.5)
    assert len(figures(f.built())) == 1  # not yet
    f.gallery.tick(due)
    assert len(figures(f.built())) == 2
    assert f.gallery.next_due() is None  # nothing dirty, nothing to sweep


def test_an_unchanged_page_is_not_written_again(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    f.add("one.jpg")
    f.gallery.flush()
    before = os.stat(f.page())
    f.gallery.changed("one.jpg")
    f.gallery.flush()
    assert os.stat(f.page()).st_ino == before.st_ino  # not replaced by a new file


def test_existing_folders_are_swept_at_start_and_stale_pages_corrected(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    f.add("x/one.jpg")
    f.add("x/two.jpg")
    f.page("x").write_text(f"<!DOCTYPE html>{MARK} a page from before a crash")
    fresh = Gallery(f.shared, lambda: f.writer)  # a new run: told about nothing
    f.gallery = fresh
    f.settle()
    assert len(figures(f.built("x"))) == 2
    assert "x/index.html" in links(f.built())


def test_turning_it_on_by_a_reload_starts_a_sweep(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    f.add("one.jpg")
    on = f.shared.config
    f.shared.config = replace(on, thumbnails=replace(on.thumbnails, gallery=False))
    f.gallery = Gallery(f.shared, lambda: f.writer)
    f.settle()
    assert not f.page().exists() and f.gallery.next_due() is None
    f.shared.config = on
    f.settle()
    assert f.page().exists()


def test_someone_elses_index_html_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = Folders(tmp_path)
    f.add("one.jpg")
    f.page().write_text("<html>my own page</html>")
    with caplog.at_level(logging.WARNING, "thumbd.gallery"):
        f.gallery.flush()
    assert f.page().read_text() == "<html>my own page</html>"
    assert "is not a thumbd gallery" in caplog.text


def test_a_folder_of_incoming_named_index_html_keeps_its_name(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    f.add("a/one.jpg")
    f.add("a/index.html/inner.jpg")  # outgoing/a/index.html must be a folder
    f.gallery.flush()
    assert (f.outgoing / "a" / GALLERY).is_dir()
    assert f.page("a/index.html").is_file()  # the folder's own page is inside it


def test_a_symlinked_folder_gets_no_page(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    f.add("real/one.jpg")
    (f.outgoing / "link").symlink_to(f.outgoing / "real")
    f.gallery.changed("link/one.jpg")
    f.gallery.flush()
    assert f.page("real").exists()
    assert not (f.outgoing / "real" / "link").exists()
    assert "link/index.html" not in links(f.built())


def test_only_thumbnail_names_are_items(tmp_path: Path) -> None:
    f = Folders(tmp_path, '[[thumbnails.size]]\nname = "big_one"\nwidth = 300\n')
    f.add("p.jpg")
    for stray in ("notes.txt", "lonely.json", "x_abc.jpg", "x_0200.jpg", "_200.jpg"):
        (f.outgoing / stray).write_text("not a thumbnail")
    listing = list_folder(f.outgoing, "", frozenset({"big_one"}))
    assert [i.key for i in listing.items] == ["p"]
    item = listing.items[0]
    assert sorted(s.file for s in item.widths) == ["p_200.jpg", "p_32.jpg", "p_64.jpg"]
    assert [s.file for s in item.named] == ["p_big_one.jpg"]


def test_a_damaged_index_only_loses_the_placeholder(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    f.add("p.jpg")
    (f.outgoing / "p.json").write_text('{"thumbhash": "\\"><script>", "thumbnails": 3}')
    f.gallery.flush()
    html = f.built()
    assert len(imgs(html)) == 1 and "data-thumbhash" not in figures(html)[0]
    assert [t for t, _ in parse(html).elements].count("script") == 1  # the page's own


def test_url_escapes_everything_that_would_end_a_name() -> None:
    assert url("a b#c?d%e\"f'g<h>.jpg") == "a%20b%23c%3Fd%25e%22f%27g%3Ch%3E.jpg"
