"""Moves: a source renamed or moved inside incoming/ takes its thumbnails along.

A file's thumbnails and index JSON are renamed to the names its new path gives (the same-stem
rules of output/names.py hold at the destination, and a note says when a name is taken there);
a folder's outgoing counterpart is renamed in one rename when nothing is in the way, and its
rows move in the same transaction. Nothing is rendered. A source moved onto the path of another
replaces it: that one's thumbnails go.

Crash safety: the files are renamed first and the rows follow, so a kill in between leaves
thumbnails under the new names with rows under the old paths. The next start finds the source
at its new path with no row and the row of a path that is gone with the same (size, mtime,
inode): the same source, moved (`Mover.follow`), whose outputs are then already where they
belong; a rename that was not made yet is made then. Runs on the main loop only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from thumbd.output import names
from thumbd.output.gallery_html import GALLERY
from thumbd.output.writer import UnsafePath, Writer, plain_key
from thumbd.render.placeholder import with_files
from thumbd.service.shared import Shared
from thumbd.store.state import Record

log = logging.getLogger("thumbd")


@dataclass(frozen=True, slots=True)
class Renamed:
    """The outcome of one source's move: its outputs now, and whether all were there."""

    outputs: list[str]
    complete: bool  # every output it listed is under its new name now


class Mover:
    """Renames the outputs of moved sources and moves their rows."""

    def __init__(self, shared: Shared, writer: Callable[[], Writer]) -> None:
        self.shared = shared
        self.writer = writer  # the publisher's, whichever a reload made
        # Told the source whose thumbnails moved (the gallery's, bound by the daemon).
        self.changed: Callable[[str], None] = lambda rel: None

    def move_file(self, src: str, dest: str, *, replace: Callable[[str], None]) -> Renamed | None:
        """`src` was renamed to `dest`: its outputs follow, its row moves. None when `src` has
        no row (nothing to move). `replace(dest)` drops a source recorded at `dest` first (its
        thumbnails go: the move overwrote it)."""
        state = self.shared.state
        record = state.get(src)
        if record is None:
            return None
        if state.get(dest) is not None:
            replace(dest)
        renamed = self._rename(record, dest)
        state.places.move(src, dest, renamed.outputs)
        self.changed(src)
        self.changed(dest)
        return renamed

    def _rename(self, record: Record, dest: str) -> Renamed:
        """Rename `record`'s outputs to those `dest` takes; an output already under its new
        name (a move a kill interrupted) counts as moved."""
        if not record.outputs:
            return Renamed([], True)
        return self.place(record.path, record.outputs, record.outputs, dest, others=(record.path,))

    def place(
        self,
        src: str,
        outputs: tuple[str, ...],
        files: tuple[str, ...],
        dest: str,
        *,
        link: bool = False,
        others: tuple[str, ...] = (),
    ) -> Renamed:
        """Give `dest` the outputs `src` had (`outputs`, named from `src`), whose files are at
        `files` now: renamed, or with `link` hard-linked (copied where links fail), under the
        names `dest` takes beside its neighbours (not counting the rows of `others`)."""
        parsed = _parse(src, outputs)
        if parsed is None:
            return Renamed([], False)
        labels, index = parsed
        near = self.shared.state.outputs_near(plain_key(dest))
        for rel in (dest, *others):
            near.pop(rel, None)
        try:
            chosen = names.choose(dest, labels, index is not None, (), near)
        except names.NamesTaken as e:
            log.info("%s -> %s: %s; rendering it again", src, dest, e, extra={"source": dest})
            return Renamed([], False)
        if chosen.note is not None:
            log.info("%s", chosen.note, extra={"source": dest})
        writer = self.writer()
        where = dict(zip(outputs, files, strict=True))
        thumbs = [where[n] for n in outputs if n != index]
        complete = True
        for old, new in zip(thumbs, chosen.thumbnails, strict=True):
            complete &= self._link(writer, old, new) if link else self._one(writer, old, new)
        if index is not None and chosen.index is not None:
            complete &= self._index(
                writer, where[index], chosen.index, dest, chosen.thumbnails, copy=link
            )
            if not link and where[index] != chosen.index:
                writer.remove(where[index], prune=True)
        return Renamed(list(chosen.all), complete)

    def _one(self, writer: Writer, old: str, new: str) -> bool:
        if old == new:
            return writer.exists(new)
        try:
            return writer.rename(old, new, prune=True) or writer.exists(new)
        except (UnsafePath, OSError) as e:
            log.warning("cannot move %s to %s: %s", old, new, e)
            return False

    def _link(self, writer: Writer, old: str, new: str) -> bool:
        try:
            return writer.link(old, new)
        except (UnsafePath, OSError) as e:
            log.warning("cannot link %s to %s: %s", old, new, e)
            return False

    def _index(
        self, writer: Writer, old: str, new: str, dest: str, thumbs: tuple[str, ...], *, copy: bool
    ) -> bool:
        """The index names the source and its thumbnails: written anew under `new` (for a
        copy without the twin's Live Photo motion, which is not beside the copy)."""
        try:
            data = (writer.root / old).read_bytes() if writer.exists(old) else None
            if data is None:
                return writer.exists(new)
            doc = json.loads(data)
            doc["source"]["file"] = dest.rpartition("/")[2]
            if copy:
                doc["source"].pop("motion", None)
            data = with_files(json.dumps(doc).encode(), [t.rpartition("/")[2] for t in thumbs])
            writer.write(new, data)
        except (OSError, ValueError, KeyError, TypeError, UnsafePath) as e:
            log.warning("cannot move the index %s to %s: %s", old, new, e)
            return False
        return True

    def move_folder(self, src: str, dest: str) -> list[tuple[str, str]]:
        """The folder `src` was renamed to `dest`: its outgoing counterpart is renamed in one
        rename (file by file when a folder is in the way there), its rows move. Returns the
        (old, new) paths of the sources moved."""
        state = self.shared.state
        writer = self.writer()
        whole = False
        try:
            # One rename, unless the folder holds files no row below it lists (kept thumbnails
            # of sources deleted there): those stay where they are, so file by file.
            if _only(writer.root / src, src, state.places.outputs_under(src)):
                whole = writer.rename_folder(src, dest)
        except (UnsafePath, OSError) as e:
            log.warning("cannot move %s to %s in %s: %s", src, dest, writer.root, e)
        moved = state.places.move_under(src, dest)
        if not whole:  # something in the way (kept thumbnails of sources deleted there)
            for _, new in moved:
                record = state.get(new)  # its outputs under the new folder already
                for name in record.outputs if record is not None else ():
                    if name.startswith(f"{dest}/"):
                        self._one(writer, src + name[len(dest) :], name)
        for old, new in moved:
            self.changed(old)
            self.changed(new)
        return moved


def _only(folder: Path, rel: str, listed: set[str]) -> bool:
    """Whether every file below `folder` (outgoing/`rel`) is one of `listed` or a gallery page."""
    for top, _dirs, files in os.walk(folder):
        where = os.path.relpath(top, folder)
        prefix = rel if where == "." else f"{rel}/{where}"
        for name in files:
            if name != GALLERY and f"{prefix}/{name}" not in listed:
                return False
    return True


def _parse(src: str, outputs: tuple[str, ...]) -> tuple[list[tuple[str, str]], str | None] | None:
    """(label, extension) of each thumbnail `outputs` lists, in order, and the index among
    them; None when they were not all made from one key of `src` (a hand-edited row)."""
    for key in names.keys(src):
        index = f"{key}.json"
        labels = []
        for name in outputs:
            if name == index:
                continue
            rest = name[len(key) + 1 :] if name.startswith(f"{key}_") else ""
            label, dot, ext = rest.rpartition(".")
            if not dot or not label or "/" in rest or "." in label:
                break
            labels.append((label, ext))
        else:
            if outputs:
                return labels, index if index in outputs else None
    return None
