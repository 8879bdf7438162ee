"""What every resize worker sets up before its first file, so that one hostile image fails alone.

Workers are dedicated processes, so process-wide settings are theirs to make:

- an address-space cap (RLIMIT_AS, `[resize] max_memory_mb`): an allocation past it raises
  MemoryError in Pillow (the file fails with a reason) or, in a decoder that aborts instead,
  kills only this worker (the daemon retries the file once, then records "worker crashed");
- Pillow's own decompression-bomb limit set to `[resize] max_pixels`. Pillow warns above
  `Image.MAX_IMAGE_PIXELS` and refuses at twice that, inside `Image.open`, before render() can
  look at the size; render() turns the warning into a failure. With its default (89.5 MP) a
  90 MP photo would fail as a "bomb" although max_pixels (100 MP) allows it; one number now
  decides.

A Dask worker is not started by thumbd, so `init_worker` never runs there: the cluster's tasks
are `render_on_cluster` / `render_bytes_on_cluster`, which set Pillow's limit before each render
(the same number, so the local pool and the cluster accept and refuse the same files). The
address-space cap is not applied to a cluster's processes: they are the cluster's to size.
Each cluster task also tells the daemon when it starts running and where (a Dask event on
STARTED_TOPIC): `[resize] timeout` counts from then, not from a wait in a worker's queue.
"""

from __future__ import annotations

from PIL import Image

from thumbd.executors.process_pool import set_memory_limit
from thumbd.render.pipeline import render, render_bytes
from thumbd.render.spec import RenderResult, RenderSpec, Signature


def init_worker(max_memory_bytes: int, max_pixels: int) -> None:
    set_memory_limit(max_memory_bytes)
    Image.MAX_IMAGE_PIXELS = max_pixels


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
