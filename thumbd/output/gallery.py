"""Galleries: `outgoing/<folder>/index.html` in every folder with thumbnails, in it or below
(`[thumbnails] gallery = true`).

A page is built from what is on disk, never from the state: the folder is listed, its
thumbnails grouped by source (`<key>_<label>.<ext>`) and each source's index (`<key>.json`,
with `index = true`) read for its real widths, name and ThumbHash. So a restart, a crash or a
lost state database cannot leave a page wrong for longer than it takes to build it again: at
start (and when the key is turned on, or outgoing/ moves) every folder is looked at once, a
little at a time.

The publisher says when it wrote or forgot a source (`changed`); that folder is then dirty and
built again once its last build is a few seconds old (MIN_INTERVAL, more for folders that are
slow to build), so a flood into one folder rewrites its page every few seconds, not once per
file. A page whose folder has no thumbnails left (and no sub-folder with a page) is removed,
with the folders that leaves empty; a page that appears or goes makes its parent dirty, whose
page links to it. Pages are written atomically by the Writer, like thumbnails, and only when
they change. Runs on the main loop, a slice of at most TICK_BUDGET seconds per pass.

The page is never taken for a thumbnail or a source: outgoing/ is not watched, `index.html`
matches no output name (those are `<key>_<label>.<ext>` and `<key>.json`), and the recovery of
a lost state adopts only the exact names a source would have written. A folder of incoming/
named `index.html` wins: its parent gets no page.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from thumbd.output.gallery_html import GALLERY, MARK, Item, Shot, page
from thumbd.output.writer import TMP_DIR, UnsafePath, Writer
from thumbd.service.shared import Shared

log = logging.getLogger("thumbd.gallery")

MIN_INTERVAL = 3.0  # seconds between two builds of one folder's page, at least...
COST_FACTOR = 20  # ...or this many times what building it took (a folder of 100,000 files)
TICK_BUDGET = 0.05  # seconds of work per pass of the main loop; the rest waits a pass
MAX_INDEX_BYTES = 64 * 1024  # a larger <key>.json is not one of ours: not read
_IMAGE_EXTENSIONS = frozenset({"jpg", "png", "webp", "avif", "gif"})


class Gallery:
    """The stage that keeps the pages current (next_due/tick, like the others)."""

    def __init__(self, shared: Shared, writer: Callable[[], Writer]) -> None:
        self.shared = shared
        self.writer = writer  # the publisher's, whichever a reload made
        self.root: Path | None = None  # the outgoing/ pages are kept in; None while off
        self.dirty: dict[str, float] = {}  # folder -> monotonic time its page may be built
        self.not_before: dict[str, float] = {}  # folder -> when it may be built again
        self.sweep: Iterator[str] | None = None  # every folder, once, after a (re)start
        self.refused: set[str] = set()  # folders whose index.html is not ours: said once
        self._follow_config()

    # -- what the publisher says -------------------------------------------------------------

    def changed(self, rel: str) -> None:
        """A source's thumbnails were written or removed: its folder's page is out of date."""
        if self.root is not None:
            self._mark(rel.rpartition("/")[0], time.monotonic())

    def _mark(self, folder: str, now: float) -> None:
        if folder not in self.dirty:
            self.dirty[folder] = max(now, self.not_before.get(folder, 0.0))

    # -- the stage's clock -------------------------------------------------------------------

    def next_due(self) -> float | None:
        if self._wanted() != self.root or self.sweep is not None:
            return time.monotonic()  # start (or stop), or go on with the sweep
        return min(self.dirty.values(), default=None)

    def tick(self, now: float) -> None:
        self._follow_config()
        if self.root is None:
            return
        deadline = time.monotonic() + TICK_BUDGET
        self._sweep(now, deadline)
        for folder in sorted((f for f, due in self.dirty.items() if due <= now), key=_depth):
            if time.monotonic() > deadline:
                return  # the rest on the next pass (next_due says now)
            del self.dirty[folder]
            self._build(folder, now)
        self._forget_old(now)

    def flush(self) -> None:
        """Build every dirty page now, whatever the interval (at shutdown); with `once`,
        finish the sweep first, so that the pages it leaves are complete."""
        self._follow_config()
        if self.root is None:
            return
        now = time.monotonic()
        if self.shared.once:
            self._sweep(now, float("inf"))
        while self.dirty:
            folder = min(self.dirty, key=_depth)
            del self.dirty[folder]
            self._build(folder, now)

    def _wanted(self) -> Path | None:
        config = self.shared.config
        return config.paths.outgoing if config.thumbnails.gallery else None

    def _follow_config(self) -> None:
        """Turned on, off, or outgoing/ moved (a reload): start again from the disk."""
        wanted = self._wanted()
        if wanted == self.root:
            return
        self.root = wanted
        self.dirty.clear()
        self.not_before.clear()
        self.sweep = None if wanted is None else _folders(str(wanted))
        if wanted is not None:
            log.debug("galleries: looking at every folder of %s", wanted)

    def _sweep(self, now: float, deadline: float) -> None:
        if self.sweep is None:
            return
        for folder in self.sweep:  # children before parents: a parent links to their pages
            self._mark(folder, now)
            if time.monotonic() > deadline:
                return
        self.sweep = None

    def _forget_old(self, now: float) -> None:
        if len(self.not_before) > 1024:  # what no longer holds anything back
            self.not_before = {f: t for f, t in self.not_before.items() if t > now}

    # -- one folder --------------------------------------------------------------------------

    def _build(self, folder: str, now: float) -> None:
        assert self.root is not None
        started = time.monotonic()
        listing = list_folder(self.root, folder, self._size_names())
        had = listing.page is not None
        if listing.foreign:
            if folder not in self.refused:
                self.refused.add(folder)
                log.warning(
                    "%s is not a thumbd gallery: leaving it alone", _page(self.root, folder)
                )
            return
        wanted = listing.items or listing.subfolders
        if not wanted or self._claimed(folder):
            if had:
                self.writer().remove(_rel(folder), prune=True)
                self._parent_changed(folder, now)
            return
        data = page(folder, listing.items, listing.subfolders)
        if data != listing.page:
            try:
                self.writer().write(_rel(folder), data)
            except (OSError, UnsafePath) as e:
                log.warning("cannot write %s: %s", _page(self.root, folder), _why(e))
                return
            if not had:
                self._parent_changed(folder, now)
        took = time.monotonic() - started
        self.not_before[folder] = now + max(MIN_INTERVAL, COST_FACTOR * took)

    def _parent_changed(self, folder: str, now: float) -> None:
        if folder:
            self._mark(folder.rpartition("/")[0], now)

    def _claimed(self, folder: str) -> bool:
        """incoming/<folder>/index.html is a folder: its thumbnails need outgoing's name."""
        incoming = self.shared.config.paths.incoming
        return os.path.isdir(os.path.join(incoming, folder, GALLERY))

    def _size_names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.shared.config.thumbnails.size)


class Listing:
    """What one folder of outgoing/ holds, for its page."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.subfolders: list[str] = []  # those with a page of their own
        self.page: bytes | None = None  # our index.html as it is now
        self.foreign = False  # an index.html we did not write (or a folder of that name)


def list_folder(root: Path, folder: str, size_names: frozenset[str]) -> Listing:
    """The thumbnails (grouped by source), sub-folders with pages, and the page itself of
    root/folder; an empty listing when it is gone or cannot be read."""
    listing = Listing()
    path = _real_folder(root, folder)
    if path is None:
        return listing
    items: dict[str, Item] = {}
    indexes: set[str] = set()
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                _take(entry, folder, listing, items, indexes, size_names)
    except OSError as e:
        log.warning("cannot list %s for its gallery: %s", path, e.strerror)
        return listing
    for key in indexes & items.keys():
        _read_index(os.path.join(path, f"{key}.json"), items[key])
    listing.items = [i for i in items.values() if i.widths or i.named]
    return listing


def _take(
    entry: os.DirEntry[str],
    folder: str,
    listing: Listing,
    items: dict[str, Item],
    indexes: set[str],
    size_names: frozenset[str],
) -> None:
    name = entry.name
    if entry.is_dir(follow_symlinks=False):
        if name == GALLERY:
            listing.foreign = True
        elif not (name == TMP_DIR and not folder) and _has_page(entry.path):
            listing.subfolders.append(name)
    elif not entry.is_file(follow_symlinks=False):
        return  # a symlink, a socket: not ours
    elif name == GALLERY:
        data = _read_page(entry.path)
        if data is None:
            listing.foreign = True
        else:
            listing.page = data
    elif name.endswith(".json"):
        indexes.add(name[:-5])
    else:
        _thumbnail(name, items, size_names)


def _thumbnail(name: str, items: dict[str, Item], size_names: frozenset[str]) -> None:
    """`x_200.jpg` (a width), `x_avatar.jpg` (a named size), else nothing of ours."""
    base, dot, ext = name.rpartition(".")
    if not dot or ext not in _IMAGE_EXTENSIONS:
        return
    named = next((n for n in size_names if base.endswith(f"_{n}") and len(base) > len(n) + 1), None)
    if named is not None:
        key = base[: -len(named) - 1]
        items.setdefault(key, Item(key)).named.append(Shot(name, 0))
        return
    key, sep, label = base.rpartition("_")
    if sep and key and label.isdigit() and label[0] != "0":
        items.setdefault(key, Item(key)).widths.append(Shot(name, int(label)))


def _read_index(path: str, item: Item) -> None:
    """What `<key>.json` adds: each thumbnail's real size, the source's name and size, and the
    placeholder. Anything unexpected in it is passed over."""
    try:
        if os.lstat(path).st_size > MAX_INDEX_BYTES:
            return
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return
    if not isinstance(data, dict):
        return
    sizes = {
        t["file"]: (t["width"], t["height"])
        for t in _list(data.get("thumbnails"))
        if isinstance(t, dict) and _is_size(t.get("width"), t.get("height"))
        and isinstance(t.get("file"), str)
    }  # fmt: skip
    item.widths = [Shot(s.file, *sizes.get(s.file, (s.width, 0))) for s in item.widths]
    item.named = [Shot(s.file, *sizes.get(s.file, (0, 0))) for s in item.named]
    source = data.get("source")
    if isinstance(source, dict):
        if isinstance(source.get("file"), str):
            item.name = source["file"]
        if _is_size(source.get("width"), source.get("height")):
            item.source_size = (source["width"], source["height"])
    for key, attr in (("thumbhash", "thumbhash"), ("dominant_colour", "colour")):
        if isinstance(data.get(key), str):
            setattr(item, attr, data[key])


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_size(w: Any, h: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 100_000 for v in (w, h))


def _read_page(path: str) -> bytes | None:
    """Our page's bytes, or None when that index.html is someone else's."""
    try:
        with open(path, "rb") as f:
            data = f.read(4 * 1024 * 1024)
    except OSError:
        return None
    return data if MARK.encode() in data[:1024] else None


def _has_page(folder: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(os.path.join(folder, GALLERY)).st_mode)
    except OSError:
        return False


def _real_folder(root: Path, folder: str) -> str | None:
    """root/folder if each part of it is a folder, not a symlink (what the Writer accepts)."""
    path = str(root)
    for part in folder.split("/") if folder else []:
        path = os.path.join(path, part)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return None
        except OSError:
            return None
    return path


def _folders(root: str, rel: str = "") -> Iterator[str]:
    """Every folder below root (root itself last), children before their parent; no symlinks,
    not the Writer's temporary folder."""
    try:
        with os.scandir(os.path.join(root, rel)) as entries:
            subs = sorted(
                e.name
                for e in entries
                if e.is_dir(follow_symlinks=False) and not (not rel and e.name == TMP_DIR)
            )
    except OSError:
        return
    for sub in subs:
        yield from _folders(root, f"{rel}/{sub}" if rel else sub)
    yield rel


def _depth(folder: str) -> int:
    """Sorts folders deepest first: a parent built after its children links to their pages."""
    return -(folder.count("/") + 1) if folder else 0


def _rel(folder: str) -> str:
    return f"{folder}/{GALLERY}" if folder else GALLERY


def _page(root: Path, folder: str) -> Path:
    return root / _rel(folder)


def _why(e: Exception) -> str:
    return (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
