"""Recovering from a lost or damaged state database, without regenerating what is there.

The state database is a cache of what the filesystem already shows: the sources in incoming/
and the thumbnails in outgoing/. So a missing database, or one SQLite calls damaged, is not a
reason to stop or to start over:

- `open_state` moves a damaged database aside (`thumbd.db.damaged-<time>`, kept for a post
  mortem), says so with a warning, and starts an empty one; a missing one is only worth a
  warning when outgoing/ shows that thumbd ran before;
- `existing_thumbnails` lets the main loop record a source as done, without rendering it, when
  every output it would write (each width and named size, in a format the configuration allows,
  and the index when there is one) is already in outgoing/ and was written after the source
  last changed. The start-up scan then rebuilds the database from the two folders.

"Written after the source last changed" compares a thumbnail's mtime with the source's ctime,
not its mtime: `cp -p`, `rsync -a` and cameras set a source's mtime to the past, but nothing
can set its ctime, which moves on every write, rename or chmod. A source that arrived (or
changed) after its thumbnails were written is therefore rendered again, also when its name
collides with thumbnails left by an earlier, deleted file of the same name.

Sources of one folder with the same stem (`x.jpg`, `x.png`) have names of their own
(thumbd.names): one the plain `x_200.jpg`, the other `x.png_200.jpg`. Without the database
nothing says which plain set is whose, so `own_thumbnails` adopts a set only under a name no
other file of the folder could have written: `x.png_200.jpg` when no `x.png.jpg` is there,
`x_200.jpg` when `x.jpg` has no sibling of stem `x`. Otherwise the source is rendered again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from pathlib import Path

from thumbd import testhooks
from thumbd.intake.settle import Kind, classify
from thumbd.output.writer import TMP_DIR, plain_key
from thumbd.render.spec import RenderSpec
from thumbd.store.state import State, StateError, is_damage

log = logging.getLogger("thumbd")

# What render() may write for one size: by [thumbnails] format, plus GIF/WebP for animations.
_EXTENSIONS = {"auto": ("jpg", "png"), "jpeg": ("jpg",), "png": ("png",), "webp": ("webp",)}
_EXTENSIONS["avif"] = ("avif",)
_ANIMATED = ("gif", "webp")


def open_state(db: Path, outgoing: Path) -> State:
    """Open the daemon's state; rebuild it (with a warning) when it is missing or damaged."""
    size = _size(db)
    if not size and _has_thumbnails(outgoing):  # gone, or emptied (`: > thumbd.db`)
        log.warning(
            "state database %s is %s; rebuilding it from a scan of incoming/ "
            "(thumbnails already in %s count as done)",
            db,
            "missing" if size is None else "empty",
            outgoing,
        )
    try:
        return _checked(db)
    except _Damaged as e:
        aside = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{db}{suffix}")
            if part.exists():
                os.replace(part, f"{aside}{suffix}")
        log.warning(
            "state database %s is damaged (%s); moved it to %s and rebuilding it from a scan "
            "of incoming/ (thumbnails already in %s count as done)",
            db,
            e,
            aside,
            outgoing,
        )
        return _checked(db)


class _Damaged(Exception):
    pass


def _checked(db: Path) -> State:
    try:
        state = State(db)
    except StateError as e:
        if isinstance(e.__cause__, sqlite3.DatabaseError) and is_damage(e.__cause__):
            raise _Damaged(e.__cause__) from e
        raise
    try:
        problem = state.quick_check()
    except sqlite3.DatabaseError as e:
        state.close()
        if is_damage(e):
            raise _Damaged(e) from e
        raise StateError(f"{db}: {e}") from None
    if problem is not None:
        state.close()
        raise _Damaged(problem)
    return state


def _size(db: Path) -> int | None:
    try:
        return db.stat().st_size
    except OSError:
        return None


def _has_thumbnails(outgoing: Path) -> bool:
    try:
        with os.scandir(outgoing) as entries:
            return any(e.name != TMP_DIR for e in entries)
    except OSError:
        return False


def expected_outputs(spec: RenderSpec) -> tuple[list[str], tuple[str, ...], bool]:
    """(labels, possible extensions, index) of what render() makes of every source."""
    labels = [str(w) for w in spec.widths] + [s.name for s in spec.sizes]
    extensions = _EXTENSIONS[spec.format] + (_ANIMATED if spec.animated else ())
    return labels, tuple(dict.fromkeys(extensions)), spec.index


def own_thumbnails(
    outgoing: Path, rel: str, spec: RenderSpec, source: str, siblings: Siblings
) -> tuple[list[str], int] | None:
    """What existing_thumbnails finds, under a key only `rel` can have written to: its whole
    file name (`x.png_200.jpg`), or its stem (`x_200.jpg`) when no sibling shares the stem."""
    changed = _ctime(source)
    for key in (rel, plain_key(rel)):
        found = None if changed is None else _complete(outgoing, key, spec, changed)
        if found is not None:
            contested = siblings.contested(source)
            if contested is not None and key.rpartition("/")[2] not in contested:
                return found
    return None


def existing_thumbnails(
    outgoing: Path, rel: str, spec: RenderSpec, source: str
) -> tuple[list[str], int] | None:
    """(names, total bytes) of a complete set of plain-named outputs written after `source`
    last changed, or None when any of them is missing or older."""
    changed = _ctime(source)
    return None if changed is None else _complete(outgoing, plain_key(rel), spec, changed)


def _ctime(source: str) -> int | None:
    try:
        return os.lstat(source).st_ctime_ns
    except OSError:
        return None


def _complete(
    outgoing: Path, key: str, spec: RenderSpec, changed: int
) -> tuple[list[str], int] | None:
    """The outputs named after `key` (`<key>_<label>.<ext>`, `<key>.json`), if all are there
    and none is older than `changed`."""
    labels, extensions, index = expected_outputs(spec)
    wanted = [[f"{key}_{label}.{ext}" for ext in extensions] for label in labels]
    if index:
        wanted.append([f"{key}.json"])
    names: list[str] = []
    total = 0
    for candidates in wanted:
        found = _newest(outgoing, candidates, changed)
        if found is None:
            return None
        names.append(found[1])
        total += found[2]
    return names, total


def _newest(outgoing: Path, candidates: list[str], changed: int) -> tuple[int, str, int] | None:
    """The newest regular file among `candidates` written at or after `changed`, if any."""
    best: tuple[int, str, int] | None = None
    for name in candidates:
        try:
            st = os.lstat(outgoing / name)
        except OSError:
            continue
        # Never an empty file: what a power loss leaves of a thumbnail it caught unwritten.
        if stat.S_ISREG(st.st_mode) and st.st_size > 0 and st.st_mtime_ns >= changed:
            found = (st.st_mtime_ns, name, st.st_size)
            best = found if best is None else max(best, found)
    return best


class Siblings:
    """Which keys (`x`, `x.png`) more than one file of a folder could name thumbnails after.

    Listing a folder costs as much as the folder is large, and a rebuilt database may adopt
    every source of a folder of 100,000: a folder's answer is kept while its mtime stays the
    same. A listing made within RACY_SECONDS of the folder's last change is used once and not
    kept: a file created in the same clock tick would not move the mtime (git's racy-clean
    rule). Only folders where some source would be adopted are ever listed.
    """

    RACY_SECONDS = 2.0
    KEEP = 64  # folders remembered at most

    def __init__(self) -> None:
        self._folders: dict[str, tuple[int, frozenset[str]]] = {}

    def contested(self, source: str) -> frozenset[str] | None:
        """The contested keys of the folder of `source`; None when it cannot be listed."""
        folder = os.path.dirname(source)
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return None
        cached = self._folders.get(folder)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        contested = _contested(folder)
        if contested is not None and time.time_ns() - mtime > self.RACY_SECONDS * 1e9:
            if len(self._folders) >= self.KEEP:
                self._folders.clear()
            self._folders[folder] = (mtime, contested)
        return contested


def _contested(folder: str) -> frozenset[str] | None:
    """Keys claimed by two files of `folder`: a stem two images share (`x` of `x.jpg` and
    `x.png`), or a file name that is another image's stem (`x.png` of `x.png.jpg`)."""
    claims: dict[str, int] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if classify(entry.name) is Kind.IMAGE and not entry.is_dir(follow_symlinks=False):
                    for key in (plain_key(entry.name), entry.name):
                        claims[key] = claims.get(key, 0) + 1
    except OSError as e:
        log.warning("cannot list %s (%s): rendering its sources again", folder, e.strerror)
        return None
    return frozenset(key for key, n in claims.items() if n > 1)


# After a power loss or a kernel crash, what the kernel had not written back yet is gone: the
# kernel flushes dirty pages after about 30 s (vm.dirty_expire_centisecs), ext4 commits every
# 5 s, and under heavy I/O both lag. Records younger than this, counted back from the last
# record of the run that went down, have their thumbnails looked at.
REBOOT_WINDOW = 300.0
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str | None:
    """This boot's id (Linux makes a new one at every boot), or None where there is none."""
    if fake := testhooks.boot_id():  # the tests' stand-in for a reboot
        return fake
    try:
        with open(BOOT_ID) as f:
            return f.read().strip() or None
    except OSError:
        return None


def after_reboot(state: State, outgoing: Path) -> None:
    """Thumbnails and records are not fsynced (docs/architecture.md, *Durability*): a record a
    checkpoint made durable can outlive the thumbnails it lists when the machine goes down.
    When the machine booted since the last run started, the sources recorded done in that run's
    last REBOOT_WINDOW seconds whose thumbnails are missing, empty or zero-filled (what a lost
    writeback leaves) are marked to be rendered again, as `thumbd redo` would. A crash of the
    process alone loses nothing the kernel has, so the same boot needs no look."""
    boot = boot_id()
    if boot is None:
        return
    previous = state.get_meta("boot_id")
    last = state.last_update()
    if previous is not None and previous != boot and last is not None:
        recent = state.done_since(last - REBOOT_WINDOW)
        lost = [path for path, outputs in recent if not all(_intact(outgoing / o) for o in outputs)]
        if lost:
            state.mark_for_redo(lost)  # at start-up: take_retries clears what it adds
            log.warning(
                "the machine restarted since the last run: %d of the %d sources done in its "
                "last %.0f s lost thumbnails (missing, empty or zero-filled); rendering them "
                "again",
                len(lost),
                len(recent),
                REBOOT_WINDOW,
            )
    state.set_meta("boot_id", boot)


def _intact(path: Path) -> bool:
    """The file is there, not empty, and does not end in zeros: the end of a JPEG, PNG, WebP,
    GIF, AVIF or index JSON is never a run of zero bytes, but a file whose size reached the
    disk before its data (XFS, ext4 in writeback mode) reads as zeros."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 16))
            tail = f.read(16)
    except OSError:
        return False
    return size > 0 and tail.strip(b"\0") != b""
