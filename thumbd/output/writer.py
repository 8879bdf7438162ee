"""Output names and atomic writes into outgoing/.

A thumbnail is written under a temporary name in `outgoing/.thumbd-tmp/` (the same filesystem
as its final place) and renamed into place, so no reader ever sees a partial file. Keeping every
temporary file in that one folder lets start-up remove what a killed daemon left behind without
walking the whole output tree.

Nothing is ever written outside outgoing/, whatever the names: a name must be a plain relative
path (no `..`, not absolute), and the folders below outgoing/ are opened one at a time with
O_NOFOLLOW, each relative to the last (openat), and the file is renamed into the folder so
opened (renameat). A symlink anywhere below outgoing/ (planted before or swapped in while
thumbd runs) is refused, not followed; there is no window between a check and the write.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("thumbd.output")

TMP_DIR = ".thumbd-tmp"

# Errors that mean "no room now", not "this source is bad": the work stays pending.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(Exception):
    """An output would land outside outgoing/ (a symlinked sub-folder, a `..` in a name)."""


def thumbnail_name(rel: str, label: str | int, ext: str) -> str:
    """`a/b/x.jpg`, 200, `jpg` -> `a/b/x_200.jpg` (relative to outgoing/); a named size's
    label is its name: `a/b/x_avatar.jpg`. These are the plain names: a source whose sibling
    of the same stem has them already gets others (thumbd.names)."""
    return f"{plain_key(rel)}_{label}.{ext}"


def index_name(rel: str) -> str:
    """`a/b/x.jpg` -> `a/b/x.json`: the index of x's thumbnails ([thumbnails] index = true)."""
    return f"{plain_key(rel)}.json"


def plain_key(rel: str) -> str:
    """`a/b/x.jpg` -> `a/b/x`: the folder and stem the plain output names start with."""
    folder, slash, stem = _split(rel)
    return f"{folder}{slash}{stem}"


def _split(rel: str) -> tuple[str, str, str]:
    """(folder, "/" or "", stem) by string work: pathlib is slow in a flood."""
    folder, slash, name = rel.rpartition("/")
    dot = name.rfind(".")
    return folder, slash, name[:dot] if 0 < dot < len(name) - 1 else name  # PurePath.stem


def plain_parts(rel: str) -> list[str]:
    """The components of a relative path that cannot leave its root; UnsafePath otherwise."""
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):  # also "" and "/abs" (first part "")
        raise UnsafePath(f"{rel!r} is not a plain relative path")
    return parts


class Writer:
    """Writes files atomically below one root folder and never outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / TMP_DIR
        self._seq = itertools.count()

    def prepare(self) -> None:
        """Create the root and clear temporary files a killed daemon may have left."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.tmp.is_symlink() or (self.tmp.exists() and not self.tmp.is_dir()):
            self.tmp.unlink()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(exist_ok=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, rel: str, data: bytes) -> int:
        """Write `data` to root/rel atomically; return the number of bytes written."""
        return self.write_all([(rel, data)])

    def write_all(self, items: list[tuple[str, bytes]]) -> int:
        """Write each (rel, data) atomically, in order; return the bytes written. The files of
        one source share their folder, so it is looked up once."""
        parts = [(plain_parts(rel), data) for rel, data in items]  # all names checked first
        total = 0
        with self._root() as root_fd, self._folder(root_fd, [TMP_DIR]) as tmp_fd:
            for folders, group in itertools.groupby(parts, key=lambda p: p[0][:-1]):
                with self._folder(root_fd, folders) as dir_fd:
                    for path, data in group:
                        total += self._write_one(tmp_fd, dir_fd, path[-1], data)
        return total

    def _write_one(self, tmp_fd: int, dir_fd: int, name: str, data: bytes) -> int:
        tmp_name = f"{os.getpid()}.{next(self._seq)}.tmp"  # short: names can be long
        fd = os.open(tmp_name, _FILE_FLAGS, 0o666, dir_fd=tmp_fd)  # the umask applies
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)  # ENOSPC may surface here or at close: both end below
            os.replace(tmp_name, name, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=tmp_fd)
            raise
        return len(data)

    def rename(self, old: str, new: str, *, prune: bool = False) -> bool:
        """Move root/old to root/new (replacing what is there), creating new's folders; with
        prune, remove the folders old leaves empty. False when root/old is not there (moved
        already, or never written). UnsafePath for a name or folder that leaves the root."""
        *old_folders, old_name = plain_parts(old)
        *new_folders, new_name = plain_parts(new)
        with self._root() as root_fd:
            try:
                src_fd = self._open_existing(root_fd, old_folders)
            except FileNotFoundError:
                return False
            try:
                with self._folder(root_fd, new_folders) as dst_fd:
                    os.replace(old_name, new_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                    if old != new:
                        _drop_if_linked(old_name, src_fd, new_name, dst_fd)
            except FileNotFoundError:
                return False
            finally:
                os.close(src_fd)
            if prune:
                self._prune(root_fd, old_folders)
        return True

    def link(self, old: str, new: str) -> bool:
        """Give root/new the content of root/old atomically: a hard link made in the temporary
        folder and renamed into place (a copy where the filesystem refuses links). False when
        root/old is not there."""
        *old_folders, old_name = plain_parts(old)
        *new_folders, new_name = plain_parts(new)
        tmp_name = f"{os.getpid()}.{next(self._seq)}.tmp"
        with self._root() as root_fd, self._folder(root_fd, [TMP_DIR]) as tmp_fd:
            try:
                src_fd = self._open_existing(root_fd, old_folders)
            except FileNotFoundError:
                return False
            try:
                try:
                    os.link(
                        old_name,
                        tmp_name,
                        src_dir_fd=src_fd,
                        dst_dir_fd=tmp_fd,
                        follow_symlinks=False,
                    )
                except FileNotFoundError:
                    return False
                except OSError as e:
                    if e.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV, errno.EOPNOTSUPP):
                        raise
                    fd = os.open(
                        old_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd
                    )
                    with os.fdopen(fd, "rb") as f:
                        data = f.read()
                    fd = os.open(tmp_name, _FILE_FLAGS, 0o666, dir_fd=tmp_fd)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                with self._folder(root_fd, new_folders) as dst_fd:
                    os.replace(tmp_name, new_name, src_dir_fd=tmp_fd, dst_dir_fd=dst_fd)
                    _drop_if_linked(tmp_name, tmp_fd, new_name, dst_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name, dir_fd=tmp_fd)
                raise
            finally:
                os.close(src_fd)
        return True

    def rename_folder(self, old: str, new: str) -> bool:
        """Move the folder root/old to root/new in one rename, if root/new is not there (or
        empty): False otherwise, and when root/old is not there."""
        *old_up, old_name = plain_parts(old)
        *new_up, new_name = plain_parts(new)
        with self._root() as root_fd:
            try:
                src_fd = self._open_existing(root_fd, old_up)
            except FileNotFoundError:
                return False
            try:
                st = os.stat(old_name, dir_fd=src_fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    return False
                with self._folder(root_fd, new_up) as dst_fd:
                    os.rename(old_name, new_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    return False
                raise
            finally:
                os.close(src_fd)
            self._prune(root_fd, old_up)
        return True

    def exists(self, rel: str) -> bool:
        try:
            *folders, name = plain_parts(rel)
        except UnsafePath:
            return False
        with self._root() as root_fd:
            try:
                fd = self._open_existing(root_fd, folders)
            except FileNotFoundError:
                return False
            try:
                os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                return False
            finally:
                os.close(fd)
        return True

    def _open_existing(self, root_fd: int, folders: list[str]) -> int:
        """A new fd for root/folders, which must all be there; FileNotFoundError otherwise
        (also for a symlink or a file in the way: nothing is read through one)."""
        fd = os.dup(root_fd)
        try:
            for folder in folders:
                try:
                    fd = _replace_fd(fd, os.open(folder, _DIR_FLAGS, dir_fd=fd))
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise FileNotFoundError(e.errno, e.strerror) from e
                    raise
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _prune(self, root_fd: int, folders: list[str]) -> None:
        """Remove root/folders and the folders above it while they are empty."""
        while folders:
            try:
                fd = self._open_existing(root_fd, folders[:-1])
            except OSError:
                return
            try:
                os.rmdir(folders[-1], dir_fd=fd)
            except OSError:
                return
            finally:
                os.close(fd)
            folders = folders[:-1]

    def remove(self, rel: str, *, prune: bool = False) -> None:
        """Remove root/rel if it is there; with prune, also the folders it leaves empty.

        Never raises: a thumbnail that cannot be removed is only logged.
        """
        try:
            *folders, name = plain_parts(rel)
        except UnsafePath as e:
            log.warning("not removing %s: %s", rel, e)
            return
        fds: list[int] = []
        try:
            fds.append(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for folder in folders:
                fds.append(os.open(folder, _DIR_FLAGS, dir_fd=fds[-1]))
            os.unlink(name, dir_fd=fds[-1])
            if prune:
                for i in range(len(folders) - 1, -1, -1):
                    os.rmdir(folders[i], dir_fd=fds[i])  # ENOTEMPTY ends the climb
        except FileNotFoundError:
            pass  # gone already
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                log.warning("not removing %s: reached through a symbolic link", self.root / rel)
            elif e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
                log.warning("cannot remove %s: %s", self.root / rel, e.strerror)
        finally:
            for fd in fds:
                os.close(fd)

    @contextlib.contextmanager
    def _root(self) -> Iterator[int]:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            # Removed under the running daemon (`rm -r outgoing`): made again, as at a start
            # (its temporary folder is made below like any missing folder).
            log.warning("%s was removed; making it again", self.root)
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _folder(self, root_fd: int, folders: list[str]) -> Iterator[int]:
        fd = self._open_folders(root_fd, folders)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_folders(self, root_fd: int, folders: list[str]) -> int:
        """A new fd for root/folders, creating what is missing, following no symlink."""
        fd = os.dup(root_fd)
        try:
            for i, folder in enumerate(folders):
                fd = _replace_fd(fd, self._open_folder(fd, folder, folders[: i + 1]))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_folder(self, parent: int, name: str, shown: list[str]) -> int:
        for _ in range(3):  # a folder removed between our mkdir and open is made again
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=parent)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                where = self.root.joinpath(*shown)
                raise UnsafePath(
                    f"{where} is a symbolic link or not a folder; thumbd writes only inside "
                    f"{self.root}"
                ) from e
        return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _replace_fd(old: int, new: int) -> int:
    os.close(old)
    return new


def _drop_if_linked(old: str, old_fd: int, new: str, new_fd: int) -> None:
    """rename() onto a hard link of the same file does nothing and leaves `old` (POSIX): a
    thumbnail linked again onto its own name (a copy of a copy), or moved onto a link of
    itself. Then `old` goes; after a rename that did its work it is not there."""
    try:
        st_old = os.stat(old, dir_fd=old_fd, follow_symlinks=False)
        st_new = os.stat(new, dir_fd=new_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if (st_old.st_dev, st_old.st_ino) == (st_new.st_dev, st_new.st_ino):
        os.unlink(old, dir_fd=old_fd)
