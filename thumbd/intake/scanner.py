"""Scans of incoming/: at start-up, periodically, and after events were lost.

The filesystem is the queue of record, so a scan is how thumbd finds work that no event told it
about: files left by a crash, files that arrived while it was stopped, events lost to a queue
overflow. It walks with os.scandir (one syscall per folder, one lstat per candidate file) and
never follows symlinks.

A scan compares the tree with the state as a merge of two sorted streams: the walk visits paths
in the order of the state's primary key (byte order of the relative path) while the state is
read in pages of that same order. Time grows linearly with the tree; memory stays flat (one page
of rows, the folders on the current path), so a daemon over a million done files does not keep a
million-entry dict alive after its start-up scan.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from thumbd.intake.settle import (
    CLUTTER_FOLDERS,
    OPT_OUT_FILES,
    Kind,
    classify,
    ignored_extension,
    shown,
    signature,
    storable,
)
from thumbd.render.spec import Signature
from thumbd.store.state import State

log = logging.getLogger("thumbd.scanner")


Unlisted = Callable[[str], None]  # told each folder (relative to root) that cannot be listed


def walk(
    root: str,
    ignore: tuple[str, ...] = (),
    unlisted: Unlisted | None = None,
    ignored: Counter[str] | None = None,
) -> Iterator[tuple[str, Kind]]:
    """Every candidate file below root as (path relative to root, kind); no symlinks. Files
    passed over for their type are counted by extension in `ignored`."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir)))
        except OSError as e:
            _cannot_list(root, rel_dir, e, unlisted)
            continue
        if _opted_out(entries):
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if _skipped(entry.name) or _unnamed(root, rel):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(rel)
            elif entry.is_file(follow_symlinks=False):
                kind = classify(rel, ignore)
                if kind is not None:
                    yield rel, kind
                elif ignored is not None:
                    _count_ignored(rel, ignore, ignored)


class _Entry(NamedTuple):
    key: str  # the name, with "/" after a folder's: how its paths sort among its siblings'
    rel: str
    entry: os.DirEntry[str]
    is_dir: bool


def walk_in_order(
    root: str,
    ignore: tuple[str, ...] = (),
    unlisted: Unlisted | None = None,
    ignored: Counter[str] | None = None,
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every candidate file below root, in byte order of its relative path; no symlinks.

    Within a folder, a sub-folder sorts as its name plus "/": everything below it shares that
    prefix, so visiting the sorted entries depth first gives the paths in global order.
    """
    stack = [iter(_sorted_entries(root, "", unlisted))]
    while stack:
        for item in stack[-1]:
            if item.is_dir:
                stack.append(iter(_sorted_entries(root, item.rel, unlisted)))
                break
            if classify(item.rel, ignore) is not None:
                yield item.rel, item.entry
            elif ignored is not None:
                _count_ignored(item.rel, ignore, ignored)
        else:
            stack.pop()


def _count_ignored(rel: str, ignore: tuple[str, ...], ignored: Counter[str]) -> None:
    ext = ignored_extension(rel, ignore)
    if ext is not None:
        ignored[ext] += 1


def _sorted_entries(root: str, rel_dir: str, unlisted: Unlisted | None = None) -> list[_Entry]:
    try:
        with os.scandir(os.path.join(root, rel_dir)) as it:
            entries = list(it)
    except OSError as e:
        _cannot_list(root, rel_dir, e, unlisted)
        return []
    found: list[_Entry] = []
    if _opted_out(entries):
        return found
    for entry in entries:
        name = entry.name
        if _skipped(name):
            continue
        rel = f"{rel_dir}/{name}" if rel_dir else name
        if _unnamed(root, rel):
            continue
        if entry.is_dir(follow_symlinks=False):
            found.append(_Entry(name + "/", rel, entry, True))
        elif entry.is_file(follow_symlinks=False):
            found.append(_Entry(name, rel, entry, False))
    found.sort(key=lambda e: e.key)
    return found


def _skipped(name: str) -> bool:
    """Dotfiles and dot-folders, and the folders a NAS or an OS keeps in a share."""
    return name.startswith(".") or name in CLUTTER_FOLDERS


def _opted_out(entries: list[os.DirEntry[str]]) -> bool:
    """A `.nomedia` or `.thumbdignore` in a folder leaves it out, and all below it."""
    return any(e.name in OPT_OUT_FILES for e in entries)


def opted_out(root: str, rel: str, seen: dict[str, bool] | None = None) -> bool:
    """Whether a folder on the way from root to `rel` (a file) holds an opt-out file. `seen`
    keeps the answer per folder (the caller clears it when the folders may have changed)."""
    parts = rel.split("/")[:-1]
    for depth in range(len(parts) + 1):
        folder = os.path.join(root, *parts[:depth])
        found = seen.get(folder) if seen is not None else None
        if found is None:
            found = any(os.path.lexists(os.path.join(folder, n)) for n in OPT_OUT_FILES)
            if seen is not None:
                seen[folder] = found
        if found:
            return True
    return False


def _cannot_list(root: str, rel_dir: str, e: OSError, unlisted: Unlisted | None) -> None:
    log.warning("cannot list %s: %s", os.path.join(root, rel_dir), e.strerror)
    if unlisted is not None:
        unlisted(rel_dir)


def listable(path: str) -> bool:
    """Whether the folder `path` can be listed (and so watched) now."""
    try:
        with os.scandir(path) as it:
            next(it, None)
    except OSError:
        return False
    return True


def _unnamed(root: str, rel: str) -> bool:
    """A name that is not valid UTF-8 cannot be recorded: say so (a folder once, not each
    file in it) and skip it."""
    if storable(rel):
        return False
    log.warning(
        "skipping %s: its name is not valid UTF-8; rename it (convmv) to have it thumbnailed",
        shown(os.path.join(root, rel)),
    )
    return True


def unrecorded(
    root: str, db: Path, ignore: tuple[str, ...] = (), page: int = 2000
) -> Iterator[str]:
    """Candidates whose current signature has no done or failed record (a sorted merge)."""
    rows = _recorded_in_order(db, page)
    row = next(rows, None)
    for rel, entry in walk_in_order(root, ignore):
        while row is not None and row[0] < rel:
            row = next(rows, None)
        if row is not None and row[0] == rel and row[1] == _signature(entry):
            continue
        yield rel


def _recorded_in_order(db: Path, page: int) -> Iterator[tuple[str, Signature]]:
    """Every recorded path with its signature, in path order, read a page at a time."""
    state = State(db, readonly=True)
    try:
        after = ""
        while rows := state.signatures_after(after, page):
            yield from rows
            after = rows[-1][0]
    finally:
        state.close()


def _signature(entry: os.DirEntry[str]) -> Signature | None:
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def pending(
    root: str,
    recorded: dict[str, tuple[Signature, str]],
    ignore: tuple[str, ...] = (),
    ignored: Counter[str] | None = None,
) -> Iterator[tuple[str, Kind]]:
    """Candidates whose current signature has no done or failed record."""
    for rel, kind in walk(root, ignore, ignored=ignored):
        known = recorded.get(rel)
        if known is None or known[0] != signature(os.path.join(root, rel)):
            yield rel, kind


def scan(
    root: str,
    db: Path,
    ignore: tuple[str, ...],
    emit: Callable[[list[str], bool], None],
    stop: threading.Event,
    batch: int = 512,
    gone: Callable[[list[str]], None] | None = None,
    unlisted: Unlisted | None = None,
    ignored: Callable[[Counter[str]], None] | None = None,
) -> None:
    """Post what needs work to `emit` in batches; the last call has final=True. A complete
    scan also posts to `gone` the recorded sources that no longer exist (deleted while thumbd
    was stopped, or while events were lost): the records the sorted merge steps over."""
    rows = _recorded_in_order(db, 2000)
    row = next(rows, None)
    found: list[str] = []
    missing: list[str] = []
    walked = recorded = 0
    passed_over: Counter[str] = Counter()
    for rel, entry in walk_in_order(root, ignore, unlisted, passed_over):
        if stop.is_set():
            break
        walked += 1
        while row is not None and row[0] < rel:
            missing.append(row[0])
            recorded += 1
            row = next(rows, None)
        if row is not None and row[0] == rel:
            recorded += 1
            unchanged = row[1] == _signature(entry)
            row = next(rows, None)
            if unchanged:
                continue
        found.append(rel)
        if len(found) >= batch:
            emit(found, False)
            found = []
    if not stop.is_set():
        while row is not None:
            missing.append(row[0])
            recorded += 1
            row = next(rows, None)
        if gone is not None:
            _report_gone(root, walked, recorded, missing, gone)
    if ignored is not None and passed_over:
        ignored(passed_over)
    emit(found, True)


def _report_gone(
    root: str, walked: int, recorded: int, missing: list[str], gone: Callable[[list[str]], None]
) -> None:
    if walked or not recorded:
        gone([rel for rel in missing if vanished(root, rel)])
        return
    # Everything gone at once looks like an unmounted share or a failing disk, not like
    # deletions: keep the records (and, with on_delete = "remove", thumbnails).
    log.warning(
        "scan of %s found no files but %d are recorded; keeping their records "
        "(is the folder mounted?)",
        root,
        recorded,
    )


def vanished(root: str, rel: str) -> bool:
    """True only when the file is certainly gone: a folder the walk could not read, or a file
    it now ignores, is still there and keeps its record."""
    try:
        os.lstat(os.path.join(root, rel))
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False
