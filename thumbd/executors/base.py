"""The seam between the daemon and where renders run: the `Pool` protocol.

The daemon knows a pool only through this protocol; which one it gets ([executor] kind) is
decided once, in executors/factory.py. A pool's future ends in one of three ways: a
`RenderResult` (thumbnails or a failure the render stage found), an exception below (the
worker crashed, the task ran out of time), or cancelled (a shutdown left it pending).
`outcome()` folds the first two into one value, so the daemon branches on a `FailKind`.
"""

from __future__ import annotations

import logging
from concurrent.futures import CancelledError, Future
from typing import Protocol

from thumbd.render.spec import FailKind, Failure, RenderResult, RenderSpec

log = logging.getLogger("thumbd.executor")


class WorkerCrashed(Exception):
    """The worker process running the task died (killed, out of memory, crashed)."""


class TaskTimeout(Exception):
    """The task ran longer than the pool's timeout; its worker was killed."""


class Pool(Protocol):
    """Where `render(path, spec)` runs: the local process pool or a Dask cluster."""

    def render(self, path: str, spec: RenderSpec, *, urgent: bool = False) -> Future[RenderResult]:
        """Start rendering `path`; the future ends as described in the module docstring.
        `urgent`: a file that arrived while thumbd runs, to go ahead of what waits there."""
        ...

    def capacity(self) -> int:
        """How many renders the daemon keeps handed over at once (the rest wait on disk)."""
        ...

    def describe(self) -> str:
        """For the start line: "2 workers", "on Dask"."""
        ...

    def workers(self) -> int:
        """Local worker processes (0 for a cluster), for `thumbd status`."""
        ...

    def restarts(self) -> int:
        """Workers replaced after a crash or a timeout so far."""
        ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; with cancel_futures, what has not started ends cancelled."""
        ...

    def terminate(self) -> None:
        """Stop now: what is running ends (the drain ran out of time)."""
        ...

    def kill(self) -> None:
        """From a signal handler, as the daemon exits at once: leave no process behind."""
        ...

    def alive(self) -> bool:
        """The pool's own thread runs (until a shutdown has finished its last task)."""
        ...

    def waiting(self) -> str | None:
        """What the pool waits for (a scheduler it cannot reach), for `thumbd status`."""
        ...

    def stuck(self, quiet: float) -> str | None:
        """Why a pool with work and no result for `quiet` seconds is stuck, or None."""
        ...


def outcome(future: Future[RenderResult]) -> RenderResult | None:
    """The future's result as a value: a failed task becomes a result with a `Failure`;
    None for a task a shutdown cancelled (its source stays pending)."""
    try:
        return future.result()
    except CancelledError:
        return None
    except WorkerCrashed as e:
        return _failed(FailKind.CRASHED, str(e))
    except TaskTimeout as e:
        return _failed(FailKind.TIMEOUT, str(e))
    except MemoryError:
        return _failed(FailKind.OUT_OF_MEMORY, "out of memory")
    except Exception as e:
        log.error("a render raised %r", e, exc_info=e)
        return _failed(FailKind.INTERNAL, f"internal error: {e}")


def _failed(kind: FailKind, reason: str) -> RenderResult:
    return RenderResult(signature=None, source_size=None, failure=Failure(kind, reason))
