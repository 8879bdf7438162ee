"""The Pool of `[executor] kind = "dask"`: thumbd's renders on a Dask cluster (dask.py)."""

from __future__ import annotations

from concurrent.futures import Future

from thumbd.config import ExecutorConfig
from thumbd.executors.dask import DaskExecutor
from thumbd.render.spec import RenderResult, RenderSpec


class DaskPool:
    """`DaskExecutor` as the daemon sees every pool (executors/base.Pool)."""

    def __init__(self, settings: ExecutorConfig, timeout: float) -> None:
        self._settings = settings
        self.executor = DaskExecutor(settings, timeout)

    def render(self, path: str, spec: RenderSpec, *, urgent: bool = False) -> Future[RenderResult]:
        return self.executor.submit_render(path, spec, urgent=urgent)

    def capacity(self) -> int:
        return self._settings.max_in_flight  # Dask would accept any number

    def describe(self) -> str:
        return "on Dask"

    def workers(self) -> int:
        return 0  # the cluster's, not ours

    def restarts(self) -> int:
        return self.executor.restarts

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.executor.shutdown(wait, cancel_futures=cancel_futures)

    def terminate(self) -> None:
        self.executor.terminate()

    def kill(self) -> None:
        """Nothing to kill: the cluster's processes are not the daemon's children."""

    def alive(self) -> bool:
        return self.executor.alive()

    def waiting(self) -> str | None:
        return self.executor.waiting()

    def stuck(self, quiet: float) -> str | None:
        return None  # a cluster without a scheduler is waited for (and logged), not stuck

    def unreachable(self, timeout: float) -> str | None:
        return self.executor.unreachable(timeout)
