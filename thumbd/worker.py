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
"""

from __future__ import annotations

from PIL import Image

from thumbd.executor import set_memory_limit


def init_worker(max_memory_bytes: int, max_pixels: int) -> None:
    set_memory_limit(max_memory_bytes)
    Image.MAX_IMAGE_PIXELS = max_pixels
