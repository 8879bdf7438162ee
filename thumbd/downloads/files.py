"""Where a download's bytes go on disk, so that no partial file ever has a final name.

The body streams into a temporary file under incoming/.thumbd-downloads/ (a dot folder, which
the watcher and scans ignore), is fsynced, and is renamed into the manifest's folder only once
complete and verified, under the extension its magic bytes show (`sniff`: the Content-Type is
only used to explain a refusal).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from thumbd.downloads.outcomes import Failure, Stop

TMP_DIR = ".thumbd-downloads"
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a download goes: incoming/<folder>/<stem>.<sniffed extension>."""

    root: str  # incoming/
    folder: str  # relative to root
    stem: str


@contextlib.contextmanager
def temp_file(folder: str) -> Iterator[tuple[str, IO[bytes]]]:
    """A new temporary file in `folder` (made if missing), removed afterwards unless renamed."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=folder, suffix=".download")
    except OSError as e:
        reason = f"cannot create a temporary file in {folder}: {e.strerror}"
        raise Stop(Failure(reason)) from None
    out = os.fdopen(fd, "wb", buffering=1024 * 1024)
    try:
        yield path, out
    finally:
        out.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still there only when the download did not complete


def sniff(head: bytes) -> str | None:
    """The image type the first bytes show (as a file extension), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tif"
    if head[:2] == b"BM" and len(head) >= 18 and head[14] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"
    if head[4:8] == b"ftyp":
        return _iso_media(head)
    return None


def _iso_media(head: bytes) -> str | None:
    brands = {head[i : i + 4] for i in range(8, min(len(head), 32), 4)}
    if brands & {b"avif", b"avis"}:
        return "avif"
    if brands & {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}:
        return "heic"
    return None


def place(tmp_path: str, dest: Destination, kind: str) -> str:
    """Rename the finished download into its folder; return its path relative to incoming/."""
    rel = f"{dest.folder}/{dest.stem}.{kind}"
    folder = os.path.join(dest.root, dest.folder)
    final = os.path.join(dest.root, rel)
    try:
        os.makedirs(folder, exist_ok=True)
        _check_inside(folder, dest.root)
        os.chmod(tmp_path, 0o666 & ~_umask())
        _replace(tmp_path, final)
        _sync_folder(folder)
    except OSError as e:
        raise Stop(Failure(f"cannot write {rel}: {e.strerror or e}")) from None
    return rel


def durable(out: IO[bytes]) -> None:
    """fsync a finished download before it gets its final name. Unlike a thumbnail, which the
    source can always make again, a download may be the only copy there will be (the URL can
    be gone tomorrow), and its URL is recorded done once it is in place: a power loss must not
    leave an empty file under a URL that is never fetched again. It costs a downloader thread a
    few milliseconds, next to a network transfer."""
    try:
        out.flush()
        os.fsync(out.fileno())
    except OSError as e:
        raise Stop(Failure(f"cannot write the download: {e.strerror}")) from None


def _sync_folder(folder: str) -> None:
    """fsync the folder, so that the download's new name survives a power loss too. Best
    effort: some filesystems (FUSE, some network mounts) refuse an fsync of a folder, and the
    download is in place all the same."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_inside(folder: str, root: str) -> None:
    real_root = os.path.realpath(root)
    real = os.path.realpath(folder)
    if os.path.commonpath([real, real_root]) != real_root:
        raise Stop(Failure(f"refused: {folder} leads outside {root} (to {real})"))


def _replace(tmp_path: str, final: str) -> None:
    try:
        os.replace(tmp_path, final)
    except OSError as e:
        if e.errno != errno.EXDEV:  # the manifest's folder is another filesystem (a mount)
            raise
        staged = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.download")
        with open(tmp_path, "rb") as src, open(staged, "wb") as dst:
            while chunk := src.read(CHUNK * 16):
                dst.write(chunk)
        os.replace(staged, final)


_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:  # os.umask can only be read by setting it: do it once
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK
