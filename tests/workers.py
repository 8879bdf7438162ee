"""Top-level task functions for the process-pool tests (they must pickle by reference)."""

from __future__ import annotations

import os
import signal
import time


def pid(_: int) -> int:
    return os.getpid()


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def die(_: int) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def boom(message: str) -> None:
    raise ValueError(message)


def unpicklable_error(_: int) -> None:
    class Local(Exception):
        pass

    raise Local("cannot pickle a local class")


def sleep_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def pillow_initialized(_: int) -> bool:
    """Whether Pillow had imported its format plugins before this task ran."""
    from PIL import Image

    return bool(Image._initialized)


def limits(_: int) -> tuple[int, int | None]:
    """The address-space cap and Pillow's bomb limit as a worker sees them."""
    import resource

    from PIL import Image

    return resource.getrlimit(resource.RLIMIT_AS)[0], Image.MAX_IMAGE_PIXELS
