"""What every resize worker sets up before its first file, so that one hostile image fails alone.

Workers are dedicated processes, so process-wide settings are theirs to make:

- an address-space cap (RLIMIT_AS, `[resize] max_memory_mb`): an allocation past it raises
  MemoryError in Pillow (the file fails with a reason) or, in a decoder that aborts instead,
  kills only this worker (the daemon retries the file once, then records "worker crashed");
- Pillow's own decompression-bomb limit set to `[resize] max_pixels`. Pillow warns above
  `Image.MAX_IMAGE_PIXELS` and refuses at twice that, inside `Image.open`, before render() can
  look at the size; render() turns the warning into a failure. With its default (89.5 MP) a
  90 MP photo would fail as a "bomb" although max_pixels (100 MP) allows it; one number now
  decides;
- the sandbox (executors/sandbox.py): read-only access to incoming/ and the code, no writes,
  no TCP, no core dumps, no new privileges, before the first source is opened. A worker writes
  nothing at all: thumbnails travel back to the daemon as bytes in the result, and the daemon
  writes outgoing/ (output/writer.py).

Each local task is `render_captured`: what decoders print on fd 2 (libtiff, libheif, LibRaw and
FFmpeg write there from C) and the Python warnings they raise are captured per task, in a
memory file, and come back with the result as lines, which the daemon logs as records about
that source (JSON with `[log] format = "json"`), never as raw bytes on its stderr. When the
decoder's own error says only "decoder error -2", the line it printed is the better reason: the
failure says that instead (libtiff's "WEBP compression support is not configured").

A Dask worker is not started by thumbd, so `init_worker` never runs there: the cluster's tasks
are `render_on_cluster` / `render_bytes_on_cluster`, which set Pillow's limit before each render
(the same number, so the local pool and the cluster accept and refuse the same files). The
address-space cap is not applied to a cluster's processes: they are the cluster's to size.
Each cluster task also tells the daemon when it starts running and where (a Dask event on
STARTED_TOPIC): `[resize] timeout` counts from then, not from a wait in a worker's queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator

from PIL import Image

from thumbd.executors import sandbox
from thumbd.executors.process_pool import set_memory_limit
from thumbd.render.pipeline import render, render_bytes
from thumbd.render.spec import RenderResult, RenderSpec, Signature

MAX_LINES = 20  # lines kept of what one task said: a hostile file can make a decoder babble
MAX_LINE = 300  # characters kept of one line
_READ_AT_MOST = 1 << 16
# Reasons that say nothing of why: Pillow's words for "the C decoder failed".
_UNINFORMATIVE = re.compile(r"decoder error -?\d+|broken data stream")
# The file name libtiff puts first: Pillow hands it a made-up one.
_TIFF_NAME = re.compile(r"^tempfile\.tif: ")
_WORDS = re.compile(r"[A-Za-z]{3}")


def init_worker(max_memory_bytes: int, max_pixels: int, readable: tuple[str, ...] = ()) -> None:
    """Set up a local worker; `readable`: the folders it may read (incoming/): when given, it
    is confined to them (and the code) for good."""
    set_memory_limit(max_memory_bytes)
    Image.MAX_IMAGE_PIXELS = max_pixels
    if readable:
        sandbox.confine(readable)


def render_captured(path: str, spec: RenderSpec) -> RenderResult:
    """render() with fd 2 and Python's warnings captured: they come back as its `said`."""
    with _captured() as said:
        result = render(path, spec)
    return dataclasses.replace(_better_reason(result, said.printed), said=said.lines())


@dataclasses.dataclass(slots=True)
class _Said:
    warned: list[str] = dataclasses.field(default_factory=list)  # Python warnings
    printed: list[str] = dataclasses.field(default_factory=list)  # what C code wrote on fd 2

    def lines(self) -> tuple[str, ...]:
        return tuple(_bounded(self.warned + self.printed))


@contextlib.contextmanager
def _captured() -> Iterator[_Said]:
    """Point fd 2 at a memory file and record warnings for the block; the _Said has them once
    the block ends (also when it raised)."""
    said = _Said()
    sys.stderr.flush()
    memory = os.memfd_create("thumbd-stderr", os.MFD_CLOEXEC)
    saved = os.dup(2)
    os.dup2(memory, 2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # every task's own, not once per worker
            yield said
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        printed = _read(memory)
        os.close(memory)
        said.warned = [f"{w.category.__name__}: {w.message}" for w in caught]
        said.printed = _bounded(_TIFF_NAME.sub("", line) for line in printed.splitlines())


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, _READ_AT_MOST).decode("utf-8", "replace")


def _bounded(lines: Iterable[str]) -> list[str]:
    """Non-empty lines, each once, at most MAX_LINES of at most MAX_LINE characters."""
    kept: dict[str, None] = {}
    for line in lines:
        line = line.strip()
        if line:
            kept.setdefault(line[:MAX_LINE], None)
        if len(kept) == MAX_LINES:
            break
    return list(kept)


def _better_reason(result: RenderResult, printed: list[str]) -> RenderResult:
    """A failure whose reason is only Pillow's error code takes the decoder's own words."""
    failure = result.failure
    printed = [line for line in printed if _WORDS.search(line)]  # not "..." alone
    if failure is None or not printed or not _UNINFORMATIVE.search(failure.reason):
        return result
    head, sep, code = failure.reason.rpartition(": ")
    words = printed[0].rstrip(".")
    reason = f"{head}: {words} ({code})" if sep else f"{words} ({failure.reason})"
    return dataclasses.replace(result, failure=dataclasses.replace(failure, reason=reason))


STARTED_TOPIC = "thumbd-started"  # {"key": task key, "worker": its address} per task started


def render_on_cluster(path: str, spec: RenderSpec) -> RenderResult:
    """render() as a Dask task: a worker sharing the watched folder reads the source itself."""
    _announce()
    Image.MAX_IMAGE_PIXELS = spec.max_pixels
    return render(path, spec)


def render_bytes_on_cluster(
    data: bytes, spec: RenderSpec, name: str, signature: Signature | None
) -> RenderResult:
    """render_bytes() as a Dask task: the source was shipped to the worker."""
    _announce()
    Image.MAX_IMAGE_PIXELS = spec.max_pixels
    return render_bytes(data, spec, name, signature)


def _announce() -> None:
    """Tell the daemon (through the scheduler) that this task runs now, and on which worker."""
    from distributed import get_worker  # only ever called on a Dask worker

    worker = get_worker()
    worker.log_event(STARTED_TOPIC, {"key": worker.get_current_task(), "worker": worker.address})
