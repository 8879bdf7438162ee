"""Opening a source safely, and the refusal every stage of a render raises for bad input.

A source is opened without following a symbolic link (a file swapped for a link to /etc/shadow
after it was checked is refused, not read) and without blocking (a FIFO that landed in the
folder must not hang a worker waiting for a writer), then checked to be a non-empty regular
file. What goes wrong becomes a `Refused`, and `with_source` turns that into the result render()
gives for the file. No Pillow here: reading a source for a Dask cluster needs none.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from typing import IO, TypeVar

from thumbd.render.spec import FailKind, Failure, RenderResult, Signature


class Refused(Exception):
    """The input cannot be rendered: raised by the source checks and by decoders, carrying the
    failure for the result (a kind the daemon branches on, a reason a person reads)."""

    def __init__(self, kind: FailKind, reason: str) -> None:
        super().__init__(reason)
        self.failure = Failure(kind, reason)


_T = TypeVar("_T")


def with_source(path: str, use: Callable[[IO[bytes], Signature, float], _T]) -> _T | RenderResult:
    """`use(file, signature, started)` on `path` opened safely and checked to be a non-empty
    regular file; a refusal on the way becomes the result render() gives for the file."""
    started = time.process_time()
    signature: Signature | None = None
    try:
        with open_source(path) as f:
            st = os.fstat(f.fileno())
            signature = (st.st_size, st.st_mtime_ns, st.st_ino)
            check_file(st)
            return use(f, signature, started)
    except Refused as refused:
        return refusal(refused, signature, started)


def refusal(refused: Refused, signature: Signature | None, started: float) -> RenderResult:
    """The result for a refused source; `started` is the process time its render began at."""
    return RenderResult(
        signature=signature,
        source_size=None,
        failure=refused.failure,
        cpu_seconds=time.process_time() - started,
    )


def _nonblocking_opener(path: str, flags: int) -> int:
    # O_NONBLOCK changes nothing for regular files; O_NOFOLLOW refuses a symlink (ELOOP).
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW)


def open_source(path: str) -> IO[bytes]:
    """`path` opened for reading, never through a symbolic link, never blocking."""
    try:
        return open(path, "rb", opener=_nonblocking_opener)
    except FileNotFoundError as e:
        raise Refused(
            FailKind.NOT_FOUND, "file not found (deleted or renamed before it was read)"
        ) from e
    except PermissionError as e:
        raise Refused(FailKind.UNREADABLE, "permission denied reading the file") from e
    except IsADirectoryError as e:
        raise Refused(FailKind.UNREADABLE, "not a regular file (a directory)") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Refused(
                FailKind.UNREADABLE, "a symbolic link (thumbd does not follow links)"
            ) from e
        raise Refused(FailKind.UNREADABLE, f"cannot open file: {e.strerror or e}") from e


def check_file(st: os.stat_result) -> None:
    """Refuse what is not a regular file with something in it."""
    if not stat.S_ISREG(st.st_mode):
        raise Refused(FailKind.UNREADABLE, "not a regular file")
    if st.st_size == 0:
        raise Refused(FailKind.EMPTY, "empty file (0 bytes)")
