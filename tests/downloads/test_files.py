"""Where a download's bytes go: the umask read without changing it, the cross-filesystem copy."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from thumbd.downloads import files
from thumbd.downloads.files import Destination, current_umask, place


def test_the_umask_is_read_without_ever_changing_it() -> None:
    """Reading it from another thread never lets the process umask drop to 0 (a file the main
    thread creates meanwhile would be world-writable)."""
    old = os.umask(0o027)
    try:
        seen: list[int] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                seen.append(current_umask())

        reader = threading.Thread(target=read)
        reader.start()
        try:
            modes = set()
            for _ in range(2000):  # os.umask can only be read by setting it: do so here
                mask = os.umask(0o027)
                modes.add(mask)
        finally:
            stop.set()
            reader.join()
    finally:
        os.umask(old)
    assert modes == {0o027}
    assert seen and set(seen) == {0o027}


def test_the_umask_read_follows_a_change() -> None:
    old = os.umask(0o077)
    try:
        assert current_umask() == 0o077
        os.umask(0o002)
        assert current_umask() == 0o002
    finally:
        os.umask(old)


def test_a_copy_across_filesystems_is_fsynced_before_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest's folder on another mount: os.replace fails with EXDEV, so the file is
    copied to a dotfile there, which must be on disk before it gets the final name."""
    root = tmp_path / "incoming"
    (root / ".thumbd-downloads").mkdir(parents=True)
    tmp = root / ".thumbd-downloads" / "a.download"
    tmp.write_bytes(b"\xff\xd8\xff" + b"x" * 5000)
    real_replace, real_fsync = os.replace, os.fsync
    synced: list[int] = []  # inodes fsynced so far
    renamed: list[tuple[str, bool]] = []  # (name, whether its inode was fsynced first)

    def cross_device(src: str, dst: str) -> None:
        if str(src) == str(tmp):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        renamed.append((os.path.basename(dst), os.stat(src).st_ino in synced))
        real_replace(src, dst)

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(files.os, "replace", cross_device)
    monkeypatch.setattr(files.os, "fsync", fsync)
    rel = place(str(tmp), Destination(str(root), "m", "a"), "jpg")
    assert rel == "m/a.jpg"
    assert renamed == [("a.jpg", True)]
    assert (root / "m" / "a.jpg").read_bytes() == tmp.read_bytes()
    assert (root / "m" / "a.jpg").stat().st_mode & 0o777 == 0o666 & ~current_umask()
