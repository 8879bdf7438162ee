"""Where a download's bytes go on disk, so that no partial file ever has a final name.

The body streams into a temporary file under incoming/.thumbd-downloads/ (a dot folder, which
the watcher and scans ignore), is fsynced, and is renamed into the manifest's folder only once
complete and verified, under the extension its magic bytes show (`sniff`: the Content-Type is
only used to explain a refusal). The body is written through aiofiles (each write on the event
loop's executor, so a slow disk never stalls the other downloads); the fsync and the rename run
there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiofiles
from aiofiles.threadpool.binary import AsyncBufferedIOBase

from thumbd.downloads.outcomes import Failure, Stop

TMP_DIR = ".thumbd-downloads"
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a download goes: incoming/<folder>/<stem>.<sniffed extension>."""

    root: str  # incoming/
    folder: str  # relative to root
    stem: str


@contextlib.asynccontextmanager
async def temp_file(folder: str) -> AsyncIterator[tuple[str, AsyncBufferedIOBase]]:
    """A new temporary file in `folder` (made if missing), removed afterwards unless renamed."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=folder, suffix=".download")
    except OSError as e:
        reason = f"cannot create a temporary file in {folder}: {e.strerror}"
        raise Stop(Failure(reason)) from None
    out = await aiofiles.open(fd, "wb")
    try:
        yield path, out
    finally:
        # Shielded: a second cancel (a shutdown's) must not leave the descriptor open.
        with contextlib.suppress(OSError):
            await asyncio.shield(out.close())
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
        os.chmod(tmp_path, 0o666 & ~current_umask())
        _replace(tmp_path, final)
        _sync_folder(folder)
    except OSError as e:
        raise Stop(Failure(f"cannot write {rel}: {e.strerror or e}")) from None
    return rel


async def durable(out: AsyncBufferedIOBase) -> None:
    """fsync a finished download before it gets its final name. Unlike a thumbnail, which the
    source can always make again, a download may be the only copy there will be (the URL can
    be gone tomorrow), and its URL is recorded done once it is in place: a power loss must not
    leave an empty file under a URL that is never fetched again. It costs an executor thread a
    few milliseconds, next to a network transfer."""
    try:
        await out.flush()
        await asyncio.get_running_loop().run_in_executor(None, os.fsync, out.fileno())
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
            dst.flush()
            os.fsync(dst.fileno())  # the copy is what gets the final name: as durable as the rest
        os.chmod(staged, os.stat(tmp_path).st_mode)
        os.replace(staged, final)


def current_umask() -> int:
    """The process umask, read without changing it. os.umask can only be read by setting it:
    while a downloader had it at 0, the main thread could create a world-writable thumbnail or
    folder. Linux shows it in /proc/self/status (since 4.7); elsewhere the common 022."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
