"""Output names and atomic writes into outgoing/.

A thumbnail is written under a temporary name in `outgoing/.thumbd-tmp/` (the same filesystem
as its final place) and renamed into place, so no reader ever sees a partial file. Keeping every
temporary file in that one folder lets start-up remove what a killed daemon left behind without
walking the whole output tree.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
from pathlib import Path, PurePosixPath

TMP_DIR = ".thumbd-tmp"

# Errors that mean "no room now", not "this source is bad": the work stays pending.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class UnsafePath(Exception):
    """An output would land outside outgoing/ (a symlinked sub-folder, say)."""


def thumbnail_name(rel: str, label: str | int, ext: str) -> str:
    """`a/b/x.jpg`, 200, `jpg` -> `a/b/x_200.jpg` (relative to outgoing/); a named size's
    label is its name: `a/b/x_avatar.jpg`."""
    p = PurePosixPath(rel)
    return str(p.with_name(f"{p.stem}_{label}.{ext}"))


def index_name(rel: str) -> str:
    """`a/b/x.jpg` -> `a/b/x.json`: the index of x's thumbnails ([thumbnails] index = true)."""
    p = PurePosixPath(rel)
    return str(p.with_name(f"{p.stem}.json"))


class Writer:
    """Writes files atomically below one root folder and never outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / TMP_DIR
        self._root = str(root)
        self._tmp = str(self.tmp)
        self._real_root = ""
        self._safe_dirs: set[str] = set()
        # Temporary names: unique within this daemon (it holds the state lock, and start-up
        # empties the folder); O_EXCL still guards against anything else writing there.
        self._names = itertools.count()
        self._mode = 0o666 & ~_umask()

    def prepare(self) -> None:
        """Create the root and clear temporary files a killed daemon may have left."""
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(exist_ok=True)
        self._real_root = os.path.realpath(self.root)
        self._safe_dirs.clear()

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, rel: str, data: bytes) -> int:
        """Write `data` to root/rel atomically; return the number of bytes written."""
        final = self._target(rel)
        fd, tmp = self._create()
        try:
            try:
                os.fchmod(fd, self._mode)  # exactly this, whatever a default ACL would give
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            _unlink(tmp)
            raise
        return len(data)

    def _create(self) -> tuple[int, str]:
        """A new temporary file, with plain os calls: this runs three times per source, and
        tempfile's random names and file objects cost the main thread more than the write."""
        while True:
            # A counter, not the output's name: that can be long enough to overflow NAME_MAX.
            tmp = os.path.join(self._tmp, f"{next(self._names)}.tmp")
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                return os.open(tmp, flags, 0o666), tmp
            except FileExistsError:
                continue

    def remove(self, rel: str) -> None:
        _unlink(self._target(rel))

    def _target(self, rel: str) -> str:
        final = os.path.join(self._root, rel)
        parent = os.path.dirname(final)
        if parent not in self._safe_dirs:
            os.makedirs(parent, exist_ok=True)
            real = os.path.realpath(parent)
            if os.path.commonpath([real, self._real_root]) != self._real_root:
                raise UnsafePath(f"{parent} leads outside {self.root} (to {real})")
            self._safe_dirs.add(parent)
        return final


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
