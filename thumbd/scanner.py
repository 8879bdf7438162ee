"""Scans of incoming/: at start-up, periodically, and after events were lost.

The filesystem is the queue of record, so a scan is how thumbd finds work that no event told it
about: files left by a crash, files that arrived while it was stopped, events lost to a queue
overflow. It walks with os.scandir (one syscall per folder, stat from the dirent where it can),
never follows symlinks, and compares against the state in one query, so its cost grows linearly
with the tree.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from thumbd.intake import Kind, classify, signature
from thumbd.render import Signature
from thumbd.state import State

log = logging.getLogger("thumbd.scanner")


def walk(root: str, ignore: tuple[str, ...] = ()) -> Iterator[tuple[str, Kind]]:
    """Every candidate file below root as (path relative to root, kind); no symlinks."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir)))
        except OSError as e:
            log.warning("cannot list %s: %s", os.path.join(root, rel_dir), e.strerror)
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(rel)
            elif entry.is_file(follow_symlinks=False):
                kind = classify(rel, ignore)
                if kind is not None:
                    yield rel, kind


def pending(
    root: str, recorded: dict[str, tuple[Signature, str]], ignore: tuple[str, ...] = ()
) -> Iterator[tuple[str, Kind]]:
    """Candidates whose current signature has no done or failed record."""
    for rel, kind in walk(root, ignore):
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
) -> None:
    """Post what needs work to `emit` in batches; the last call has final=True. A complete
    scan first posts to `gone` the recorded sources that no longer exist (deleted while thumbd
    was stopped, or while events were lost)."""
    state = State(db, readonly=True)
    try:
        recorded = state.signatures()
    finally:
        state.close()
    found: list[str] = []
    seen: set[str] = set()
    for rel, _ in walk(root, ignore):
        if stop.is_set():
            break
        seen.add(rel)
        known = recorded.get(rel)
        if known is None or known[0] != signature(os.path.join(root, rel)):
            found.append(rel)
        if len(found) >= batch:
            emit(found, False)
            found = []
    if gone is not None and not stop.is_set():
        if seen or not recorded:
            gone([rel for rel in recorded if rel not in seen and vanished(root, rel)])
        else:
            # Everything gone at once looks like an unmounted share or a failing disk, not
            # like deletions: keep the records (and, with on_delete = "remove", thumbnails).
            log.warning(
                "scan of %s found no files but %d are recorded; keeping their records "
                "(is the folder mounted?)",
                root,
                len(recorded),
            )
    emit(found, True)


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
